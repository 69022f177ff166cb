//! [`MemoryStore`]: the default store, a sharded in-process map.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{
    ChangeSet, CycleOutcome, Items, Keep, Listed, Meta, Record, Renewal, SaveOutcome, SessionStore,
    StoreFuture, Timestamp,
};
use crate::error::{StoreError, StoreErrorKind};
use crate::id::{PublicId, SessionId};
use crate::telemetry;

/// The default cap on the number of sessions in a [`MemoryStore`].
pub const DEFAULT_MAX_SESSIONS: usize = 1_000_000;

/// The most due sessions one sweep step examines.
const MAX_BATCH: usize = 256;
/// How many due sessions one operation examines for reclamation.
const SWEEP_BUDGET: usize = 64;
/// How many due sessions a create into a full store may examine before it
/// gives up and reports the store full (bounds that request's pause).
const FULL_SWEEP_BUDGET: usize = 1024;
/// How many stale entries (ids of sessions gone or moved) the expiry index
/// may hold beyond one per live session before operations start compacting
/// it. The index holds at most `2 × live + INDEX_SLACK` ids, give or take
/// what one step is working on.
const INDEX_SLACK: usize = 1024;
/// The most ids one compaction step examines (it takes whole chunks).
const COMPACT_BUDGET: usize = 256;
/// The most chunks one compaction step takes.
const COMPACT_CHUNKS: usize = 8;
/// Sessions per map shard at the cap: growing a shard moves at most this
/// many entries (tens of microseconds), under that shard's lock only.
const SHARD_TARGET: usize = 2048;
/// The most shards a map gets (128 bytes each): 8M sessions at
/// [`SHARD_TARGET`] a shard. More shards would cost more than they save: a
/// store with a huge cap (or `usize::MAX`) and few sessions would miss the
/// cache on every look-up for the shard headers alone (32768 shards are 4 MB).
const MAX_SHARDS: usize = 1 << 12;
/// Capacity is given back once the store holds less than a quarter of its
/// peak, and the peak was at least this many sessions.
const SHRINK_MIN_PEAK: usize = 4096;
/// Shards (of each map) one operation shrinks while capacity is given back.
const SHRINK_SHARDS_PER_OP: usize = 2;
/// A request this large is a "large" one to glibc's malloc (past its
/// per-thread cache and its small bins); see [`settle_allocator`].
const SETTLE_BYTES: usize = 2048;
/// Locks that make `cycle` and `end` on one session atomic with respect to
/// each other, picked by the session's public id.
const STRIPES: usize = 64;

/// An in-memory store on a [`DashMap`] keyed by [`SessionId`]: the default.
///
/// - **Shared snapshots.** A load hands out the session's [`Items`] (one
///   shared buffer), not a deep copy; a save applies the request's
///   [`ChangeSet`] to the entry under that entry's shard lock, swapping in
///   the new buffer (requests still holding the old one keep it). No lock is
///   ever held across an `.await` (every operation is synchronous inside),
///   and no operation holds a shard's lock while it touches another entry.
/// - **Bounded sessions.** At most
///   [`with_max_sessions`](Self::with_max_sessions) sessions
///   ([`DEFAULT_MAX_SESSIONS`] by default), a hard bound under any
///   concurrency: a create reserves its place in an atomic count before it
///   inserts, and every removal gives the place back. When full, expired
///   sessions are reclaimed first; if it is still full, creating a session
///   fails with [`StoreErrorKind::Full`], which the layer answers with `503`.
///   Live sessions are never evicted to make room.
/// - **Reclamation without a task or a pause.** Each session is filed in an
///   expiry index by the second it expires. Operations that find the oldest
///   second due reclaim up to 64 sessions from it (a session refreshed
///   meanwhile is filed again under its new expiry). There is no background
///   task and no pass over the whole map, so no request waits on a
///   stop-the-world cleanup, and nothing needs to be started or stopped.
/// - **Memory bounded by the live sessions, at every moment.** A session
///   that goes before it expires (deleted, ended, emptied, or moved to a new
///   id by a cycle) leaves a stale id in the expiry index. While stale ids
///   outnumber the live sessions by more than 1024, every operation
///   compacts a few chunks of the index (at most 256 ids, outside the
///   index's lock), so the index holds at most about `2 × live + 1024` ids
///   (16 bytes each) whatever the mix of operations, and returns to that
///   constant after churn that leaves no session alive.
/// - **Logouts follow moves.** [`end`](SessionStore::end) finds a session
///   even after a concurrent [`cycle`](SessionStore::cycle) moved it: the
///   store remembers, for each session that was cycled at least once, where
///   its [`PublicId`] lives now (a 32-byte entry, about 60 bytes with its
///   table, per such session). That memory is
///   made by the first cycle and released with the session on every path
///   that removes it (reclaimed when expired, found expired on load,
///   emptied by a save or a cycle, deleted, ended), so it never outlives
///   the session. `cycle` and `end` on one session take the same lock
///   (one of 64, picked by the public id), so whichever runs second sees
///   what the first did.
/// - **No stall as it grows.** The map is split into shards by the cap
///   (about 2048 sessions a shard at the cap, at most 4096 shards), so
///   growing one shard's table, which happens under that shard's lock,
///   moves a couple of thousand entries at most (up to a cap of 8M; above
///   it, shards hold more): no operation waits on a rehash of a large
///   table. After the store shrinks below a quarter of
///   its peak, operations give the spare table capacity back, two shards
///   at a time.
///
/// # Memory to plan for
///
/// Measured with `examples/memory.rs` (1M sessions created through the
/// layer, each holding two items, 48 bytes of keys and values): about 266
/// heap bytes and 289 resident bytes a session: the map entry (80 bytes,
/// in tables between 44% and 88% full), the items' buffer, and 16 bytes in
/// the expiry index. Add about 60 bytes for each session cycled at least
/// once (its remembered move), at most 16 bytes a live session (plus 16 KiB)
/// for stale index ids, and 256 bytes a shard (1 MB at most).
///
/// A session linked for the [registry](crate::SessionRegistry) costs more:
/// its links and own settings in one block, an entry in the link index per
/// link (8 bytes of key and the session inline; a vector once one value
/// has several sessions), and its remembered place. Measured with
/// `examples/memory.rs`, linked as `user` (one value for all) and `sid`
/// (one each): about 240 heap bytes more a session, in one more block.
///
/// Plan the resident set for the peak. Capacity given back after a mass
/// expiry returns to the allocator; how much of it reaches the operating
/// system is up to the allocator. With glibc, 10M sessions at 1.35 GB
/// resident fell to 0.69 GB once all but 10k had expired, and 4M sessions
/// from 0.66 GB to 0.18 GB (`cargo bench --bench memory_store -- growth`).
///
/// The shard count is chosen when the cap is set on a store that no clone
/// shares yet (as `MemoryStore::new().with_max_sessions(n)` does). Clones
/// share the same sessions.
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

/// Hashes a [`SessionId`] (or a [`PublicId`]) by folding its 128 bits to 64.
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
        // Not reached for the ids (each hashes as one `u128`); kept total.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

type Hasher = std::hash::BuildHasherDefault<IdHasher>;
type IdMap = DashMap<SessionId, Record, Hasher>;
/// For each session cycled at least once or holding a link: the id it
/// lives under now.
type MoveMap = DashMap<PublicId, SessionId, Hasher>;
/// The link index: a keyed hash of `(name, value)` to the public ids of
/// the sessions linked so. The key is 8 bytes whatever the link (no copy of
/// the name and value), and the usual single session per value is held
/// inline. Two links may share a key (a 64-bit hash collision, which a
/// client cannot aim for: the hash is keyed per store), so every reader
/// checks the session's own link before it lists or ends it.
type LinkMap = DashMap<u64, Linked, Hasher>;

/// The sessions filed under one link key.
#[derive(Debug)]
enum Linked {
    One(PublicId),
    Many(Vec<PublicId>),
}

impl Linked {
    fn push(&mut self, p: PublicId) {
        match self {
            Linked::One(q) if *q == p => {}
            Linked::One(q) => *self = Linked::Many(vec![*q, p]),
            Linked::Many(v) if v.contains(&p) => {}
            Linked::Many(v) => v.push(p),
        }
    }

    /// Removes `p`; whether none is left.
    fn remove(&mut self, p: &PublicId) -> bool {
        match self {
            Linked::One(q) => q == p,
            Linked::Many(v) => {
                v.retain(|q| q != p);
                let empty = v.is_empty();
                if let [only] = v[..] {
                    *self = Linked::One(only);
                }
                empty
            }
        }
    }

    fn to_vec(&self) -> Vec<PublicId> {
        match self {
            Linked::One(p) => vec![*p],
            Linked::Many(v) => v.clone(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Linked::One(_) => 1,
            Linked::Many(v) => v.len(),
        }
    }
}

/// A cycle's hold on its new id while it moves the session there: not a
/// session (no items, created at the end of time, expired at its start),
/// invisible to every other operation. The map holds plain [`Record`]s, so
/// an entry costs what the record does (80 bytes with its id).
fn reservation(public_id: PublicId) -> Record {
    Record {
        items: Items::new(),
        created_at: Timestamp::MAX,
        expires_at: Timestamp::UNIX_EPOCH,
        public_id,
        meta: Meta::new(),
    }
}

fn is_reservation(r: &Record) -> bool {
    r.created_at == Timestamp::MAX && r.expires_at == Timestamp::UNIX_EPOCH
}

/// Set in a stored record's `created_at` once `moves` remembers the session
/// (it was cycled, or linked), so removing a session that never was costs no look-up
/// there. A real `created_at` (ms since 1970) never reaches this bit;
/// [`load`](Inner::load) hands records out without it.
const MOVED: u64 = 1 << 63;

/// Whether `created_at` carries the [`MOVED`] flag.
fn is_moved(created_at: Timestamp) -> bool {
    created_at.as_millis() & MOVED != 0
}

/// `created_at` with the [`MOVED`] flag set or cleared.
fn flag_moved(created_at: Timestamp, moved: bool) -> Timestamp {
    let ms = created_at.as_millis();
    Timestamp::from_millis(if moved { ms | MOVED } else { ms & !MOVED })
}

struct Inner {
    map: IdMap,
    moves: MoveMap,
    links: LinkMap,
    /// The key of the link index's hash (random per store).
    link_hasher: std::collections::hash_map::RandomState,
    stripes: Box<[Mutex<()>]>,
    max_sessions: AtomicUsize,
    /// Sessions held: a create reserves its place here before it inserts,
    /// every removal gives it back after, so the map never holds more
    /// sessions than this, and this never exceeds the cap.
    len: AtomicUsize,
    /// The most sessions held since capacity was last given back.
    peak: AtomicUsize,
    /// Where the next shrink step starts (counts up; taken modulo shards).
    shrink_cursor: AtomicUsize,
    /// Sessions filed by the second they expire (`ceil(expires_at / 1000)`),
    /// in chunks of at most [`CHUNK`] ids, so no push ever moves a large
    /// vector: the key is (second, chunk number).
    wheel: Mutex<Wheel>,
    /// Ids in the wheel (live and stale), as `Wheel::ids`, readable without
    /// the lock.
    filed: AtomicUsize,
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

/// The expiry index.
struct Wheel {
    chunks: BTreeMap<(u64, u32), Vec<SessionId>>,
    /// How many ids the chunks hold.
    ids: usize,
    /// The key the next compaction step starts from.
    cursor: (u64, u32),
}

#[cfg(test)]
impl Wheel {
    /// How many chunks there are.
    fn len(&self) -> usize {
        self.chunks.len()
    }
}

/// The most ids one chunk of the expiry index holds (a compaction step may
/// put a few more back into one).
const CHUNK: usize = 256;

/// Makes the allocator merge the small blocks freed so far, now, while they
/// are few.
///
/// glibc's malloc sets freed small blocks (a session's items buffer is one)
/// aside and merges them all at the next large request, whoever makes it.
/// After a mass expiry, reclaiming a million sessions without one large
/// request in between leaves a million blocks for the next one (the first
/// shard being shrunk, say): milliseconds in one operation, measured with
/// `benches/memory_store.rs` (`growth`). A large request after each sweep
/// step that freed sessions keeps that work to the few dozen blocks the step
/// freed. Under other allocators this is one cheap allocation.
fn settle_allocator() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(SETTLE_BYTES)));
}

fn bucket_of(expires_at: Timestamp) -> u64 {
    expires_at.as_millis().div_ceil(1000)
}

/// How many shards a map gets for `max_sessions`: about [`SHARD_TARGET`]
/// sessions each at the cap, never fewer than DashMap's default.
fn shard_amount(max_sessions: usize) -> usize {
    let default = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_mul(4)
        .next_power_of_two()
        .max(4);
    (max_sessions / SHARD_TARGET)
        .checked_next_power_of_two()
        .unwrap_or(MAX_SHARDS)
        .max(default)
        .min(MAX_SHARDS)
}

fn new_map<K: Eq + std::hash::Hash, V>(shards: usize) -> DashMap<K, V, Hasher> {
    DashMap::with_capacity_and_hasher_and_shard_amount(0, Hasher::default(), shards)
}

impl MemoryStore {
    /// An empty store holding at most [`DEFAULT_MAX_SESSIONS`] sessions.
    pub fn new() -> Self {
        let shards = shard_amount(DEFAULT_MAX_SESSIONS);
        Self {
            inner: Arc::new(Inner {
                map: new_map(shards),
                moves: new_map(shards),
                links: DashMap::default(),
                link_hasher: std::collections::hash_map::RandomState::new(),
                stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
                max_sessions: AtomicUsize::new(DEFAULT_MAX_SESSIONS),
                len: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                shrink_cursor: AtomicUsize::new(0),
                wheel: Mutex::new(Wheel {
                    chunks: BTreeMap::new(),
                    ids: 0,
                    cursor: (0, 0),
                }),
                filed: AtomicUsize::new(0),
                next_due: AtomicU64::new(u64::MAX),
            }),
        }
    }

    /// Caps the number of sessions held at once.
    ///
    /// When the cap is reached, expired sessions are reclaimed first; if none
    /// can be, creating a new session fails with `503 Service Unavailable`
    /// while existing sessions keep working. The cap holds under any
    /// concurrency. The default is [`DEFAULT_MAX_SESSIONS`] (1,000,000).
    ///
    /// This is the builder form, for a store being made. Every clone of a
    /// `MemoryStore` is the same store, so the cap belongs to the store, not
    /// to one handle: to change it on a store already shared, say so with
    /// [`set_max_sessions`](Self::set_max_sessions).
    ///
    /// Called on a store that is empty and not yet cloned (as below), it also
    /// splits the map into shards for that many sessions (about 2048 a shard
    /// at the cap), so that no operation stalls on a large rehash as the
    /// store grows.
    ///
    /// # Example
    ///
    /// ```
    /// use tower_session_storage::MemoryStore;
    ///
    /// let store = MemoryStore::new().with_max_sessions(10_000);
    /// # let _ = store;
    /// ```
    #[must_use = "with_max_sessions returns the store; bind it"]
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.inner.max_sessions.store(max, Ordering::Relaxed);
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            let shards = shard_amount(max);
            if *inner.len.get_mut() == 0 && inner.map.shards().len() != shards {
                inner.map = new_map(shards);
                inner.moves = new_map(shards);
            }
        }
        self
    }

    /// Changes the cap of this store, through every clone of it (they are
    /// one store). Sessions above a lowered cap are not evicted; creating
    /// new ones fails until enough have expired. The map keeps the shards
    /// it was built with: for a cap far above the one the store was made
    /// with, build it with [`with_max_sessions`](Self::with_max_sessions)
    /// instead, or a growing store stalls on rehashes.
    ///
    /// ```
    /// use tower_session_storage::MemoryStore;
    ///
    /// let store = MemoryStore::new();
    /// let shared = store.clone();
    /// store.set_max_sessions(500);
    /// assert_eq!(shared.max_sessions(), 500);
    /// ```
    pub fn set_max_sessions(&self, max: usize) {
        self.inner.max_sessions.store(max, Ordering::Relaxed);
    }

    /// The cap on live sessions.
    pub fn max_sessions(&self) -> usize {
        self.inner.max_sessions.load(Ordering::Relaxed)
    }

    /// How many sessions are held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every operation is a synchronous map operation: the store answers at
/// once ([`StoreFuture::ready`]), so the layer runs it in place.
impl SessionStore for MemoryStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        StoreFuture::ready(Ok(self.inner.load(id, now)))
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        StoreFuture::ready(self.inner.create(id, record))
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        StoreFuture::ready(Ok(self.inner.save(id, changes, at)))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        StoreFuture::ready(Ok(self.inner.cycle(old, new, changes, at)))
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        self.inner.delete(id);
        StoreFuture::ready(Ok(()))
    }

    /// Ends the session under `id`, and the session named `public_id`
    /// wherever a cycle moved it.
    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        self.inner.end(id, public_id);
        StoreFuture::ready(Ok(()))
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        StoreFuture::ready(Ok(self.inner.touch(id, at)))
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        StoreFuture::ready(Ok(self.inner.list(name, value, now, limit)))
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        StoreFuture::ready(Ok(self.inner.end_linked(name, value, keep)))
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        StoreFuture::ready(Ok(self.inner.end_public(public_id)))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}

mod index;
mod ops;
#[cfg(test)]
mod tests;
