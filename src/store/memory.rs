//! [`MemoryStore`]: the default store, a sharded in-process map.

use std::collections::BTreeMap;
use std::time::Duration;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{
    ChangeSet, CycleOutcome, Items, Record, SaveOutcome, SessionStore, StoreFuture, Timestamp,
};
use crate::error::{StoreError, StoreErrorKind};
use crate::id::{PublicId, SessionId};

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
/// The most shards a map gets (128 bytes each): enough for 64M sessions at
/// [`SHARD_TARGET`] a shard.
const MAX_SHARDS: usize = 1 << 15;
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
///   (about 2048 sessions a shard at the cap, at most 32768 shards), so
///   growing one shard's table, which happens under that shard's lock,
///   moves a couple of thousand entries at most: no operation waits on a
///   rehash of a large table. After the store shrinks below a quarter of
///   its peak, operations give the spare table capacity back, two shards
///   at a time.
///
/// # Memory to plan for
///
/// Measured with `examples/memory.rs` (1M sessions created through the
/// layer, each holding two items, 48 bytes of keys and values): about 233
/// heap bytes and 250 resident bytes a session: the map entry (64 bytes,
/// in tables between 44% and 88% full), the items' buffer, and 16 bytes in
/// the expiry index. Add about 60 bytes for each session cycled at least
/// once (its remembered move), at most 16 bytes a live session (plus 16 KiB)
/// for stale index ids, and 256 bytes a shard (2 MB at a cap of 10M).
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
/// For each session cycled at least once: the id it lives under now.
type MoveMap = DashMap<PublicId, SessionId, Hasher>;

/// A cycle's hold on its new id while it moves the session there: not a
/// session (no items, created at the end of time, expired at its start),
/// invisible to every other operation. The map holds plain [`Record`]s, so
/// an entry costs what the record does (64 bytes with its id).
fn reservation(public_id: PublicId) -> Record {
    Record {
        items: Items::new(),
        created_at: Timestamp::MAX,
        expires_at: Timestamp::UNIX_EPOCH,
        public_id,
    }
}

fn is_reservation(r: &Record) -> bool {
    r.created_at == Timestamp::MAX && r.expires_at == Timestamp::UNIX_EPOCH
}

/// Set in a stored record's `created_at` once `moves` remembers the session
/// (it was cycled), so removing a session that never was costs no look-up
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
    /// concurrency. The default is [`DEFAULT_MAX_SESSIONS`] (1,000,000). The
    /// setting is shared by clones.
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

    /// How many sessions are held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.inner.len.load(Ordering::Relaxed)
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn wheel(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock `cycle` and `end` take for the session named `public_id`.
    fn stripe(&self, public_id: &PublicId) -> MutexGuard<'_, ()> {
        let i = self.moves.hasher().hash_one(public_id) as usize % self.stripes.len();
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_next_due(&self, wheel: &Wheel) {
        let due = wheel
            .chunks
            .first_key_value()
            .map_or(u64::MAX, |((b, _), _)| b.saturating_mul(1000));
        self.next_due.store(due, Ordering::Relaxed);
        self.filed.store(wheel.ids, Ordering::Relaxed);
    }

    /// Files ids under the seconds given with them.
    fn file(&self, entries: impl IntoIterator<Item = (u64, SessionId)>) {
        let mut wheel = self.wheel();
        for (b, id) in entries {
            wheel.ids += 1;
            let last = wheel.chunks.range_mut((b, 0)..=(b, u32::MAX)).next_back();
            let seq = match last {
                Some((_, ids)) if ids.len() < CHUNK => {
                    ids.push(id);
                    continue;
                }
                Some(((_, seq), _)) => seq.wrapping_add(1),
                None => 0,
            };
            wheel.chunks.insert((b, seq), vec![id]);
        }
        self.set_next_due(&wheel);
    }

    /// Accounts for a session just removed from the map (its guard
    /// released): gives its place back, and forgets where it moved if it
    /// was cycled. Takes no stripe lock: a cycle that would move this
    /// session finds it gone, and `end` only deletes what it finds.
    fn forget(&self, id: &SessionId, record: &Record) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        if is_moved(record.created_at) {
            self.moves.remove_if(&record.public_id, |_, at| at == id);
        }
    }

    /// The small amount of upkeep every operation does: reclaim a few due
    /// sessions, compact a few chunks of the index while it holds too many
    /// stale ids, give back a few shards' spare capacity after the store
    /// shrank. A few atomic loads when there is nothing to do.
    fn maintain(&self, now: Timestamp) {
        if now.as_millis() >= self.next_due.load(Ordering::Relaxed) {
            self.sweep(now, SWEEP_BUDGET, false);
        }
        let live = self.len.load(Ordering::Relaxed);
        if self.filed.load(Ordering::Relaxed) > live.saturating_mul(2).saturating_add(INDEX_SLACK) {
            self.compact();
        }
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= SHRINK_MIN_PEAK && live.saturating_mul(4) < peak {
            self.shrink_step(live);
        }
    }

    /// Examines up to `budget` sessions filed under due seconds: removes the
    /// expired ones, files the refreshed ones again, drops stale ids. Returns
    /// how many it examined. With `wait == false` it gives way to a sweep
    /// already running.
    fn sweep(&self, now: Timestamp, budget: usize, wait: bool) -> usize {
        self.sweep_until(now, now, budget, wait)
    }

    /// [`sweep`](Self::sweep), taking the seconds filed up to `due` (at or
    /// after `now`); only sessions expired at `now` are removed.
    fn sweep_until(&self, now: Timestamp, due: Timestamp, budget: usize, wait: bool) -> usize {
        // On the stack: no allocation for the batch. The one large request
        // a step makes is the deliberate one after it freed sessions
        // (`settle_allocator`), when the blocks to merge are few.
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
                let Some(mut first) = wheel.chunks.first_entry() else {
                    break;
                };
                if first.key().0.saturating_mul(1000) > due.as_millis() {
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
                wheel.ids -= take;
            }
            self.set_next_due(&wheel);
        }
        let mut refile = [(0u64, SessionId::NIL); MAX_BATCH];
        let mut r = 0;
        let mut removed = 0;
        for &id in &batch[..n] {
            let Entry::Occupied(e) = self.map.entry(id) else {
                continue; // stale: the session went before it expired
            };
            let record = e.get();
            if is_reservation(record) {
                continue; // a cycle's new id, not filed yet
            }
            if record.expires_at <= now {
                let record = e.remove();
                self.forget(&id, &record);
                drop(record);
                removed += 1;
            } else {
                refile[r] = (bucket_of(record.expires_at), id);
                r += 1;
            }
        }
        if r > 0 {
            self.file(refile[..r].iter().copied());
        }
        if removed > 0 {
            settle_allocator();
        }
        n
    }

    /// One compaction step: takes a few chunks of the index, from where the
    /// last step stopped, and puts back only the ids still filed there.
    /// Gives way to anyone holding the index.
    fn compact(&self) {
        let mut examined = 0;
        for _ in 0..COMPACT_CHUNKS {
            if examined >= COMPACT_BUDGET {
                break;
            }
            let (key, mut ids) = {
                let Ok(mut wheel) = self.wheel.try_lock() else {
                    return;
                };
                let next = wheel
                    .chunks
                    .range(wheel.cursor..)
                    .next()
                    .or_else(|| wheel.chunks.first_key_value())
                    .map(|(k, _)| *k);
                let Some(key) = next else {
                    return;
                };
                let Some(ids) = wheel.chunks.remove(&key) else {
                    return;
                };
                wheel.ids -= ids.len();
                wheel.cursor = match key.1.checked_add(1) {
                    Some(seq) => (key.0, seq),
                    None => (key.0.saturating_add(1), 0),
                };
                self.set_next_due(&wheel);
                (key, ids)
            };
            examined += ids.len();
            ids.retain(|id| self.map.get(id).is_some_and(|r| !is_reservation(&r)));
            if ids.is_empty() {
                continue;
            }
            // Back under the same key, behind the cursor: this pass does not
            // see them again.
            let mut wheel = self.wheel();
            wheel.ids += ids.len();
            match wheel.chunks.entry(key) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(ids);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.get_mut().append(&mut ids);
                }
            }
            self.set_next_due(&wheel);
        }
    }

    /// Gives back the spare capacity of a few shards (of both maps). Each
    /// shard is rebuilt for what it holds now under its own lock, which
    /// costs what that shard holds (a couple of thousand entries at most).
    /// After a whole pass, the peak is what the store holds now.
    fn shrink_step(&self, live: usize) {
        let shards = self.map.shards().len();
        for _ in 0..SHRINK_SHARDS_PER_OP {
            let i = self.shrink_cursor.fetch_add(1, Ordering::Relaxed) % shards;
            {
                let hasher = self.map.hasher();
                let mut shard = self.map.shards()[i].write();
                let len = shard.len();
                if shard.capacity() > 2 * len + 8 {
                    shard.shrink_to(len, |(k, _)| hasher.hash_one(k));
                }
            }
            if let Some(shard) = self.moves.shards().get(i) {
                let hasher = self.moves.hasher();
                let mut shard = shard.write();
                let len = shard.len();
                if shard.capacity() > 2 * len + 8 {
                    shard.shrink_to(len, |(k, _)| hasher.hash_one(k));
                }
            }
            if i + 1 == shards {
                self.peak.store(live, Ordering::Relaxed);
                return;
            }
        }
    }

    fn load(&self, id: &SessionId) -> Option<Record> {
        let now = Timestamp::now();
        self.maintain(now);
        {
            let record = self.map.get(id)?;
            if is_reservation(&record) {
                return None;
            }
            if record.expires_at > now {
                let mut record = record.clone();
                record.created_at = flag_moved(record.created_at, false);
                return Some(record);
            }
        }
        if let Some((_, record)) = self
            .map
            .remove_if(id, |_, r| r.expires_at <= now && !is_reservation(r))
        {
            self.forget(id, &record);
        }
        None
    }

    fn full(max: usize) -> StoreError {
        StoreError::new(
            StoreErrorKind::Full,
            format!(
                "memory store holds its maximum of {max} live sessions; \
                 raise MemoryStore::with_max_sessions or shorten the idle timeout"
            ),
        )
    }

    /// Takes one place under the cap; `false` when the store is full.
    fn reserve(&self, max: usize) -> bool {
        match self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(n) => {
                self.peak.fetch_max(n + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.maintain(now);
        let max = self.max_sessions.load(Ordering::Relaxed);
        if !self.reserve(max) {
            let mut examined = 0;
            let mut due = now;
            loop {
                let n = self.sweep_until(now, due, MAX_BATCH, true);
                examined += n;
                if self.reserve(max) {
                    break;
                }
                if n == 0 || examined >= FULL_SWEEP_BUDGET {
                    if due == now {
                        // A session that expired within the current second
                        // is filed under the second's end: look there once
                        // too before refusing.
                        due = now.saturating_add(Duration::from_millis(999));
                        continue;
                    }
                    return Err(Self::full(max));
                }
            }
        }
        match self.map.entry(*id) {
            Entry::Occupied(_) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                return Ok(false);
            }
            Entry::Vacant(v) => {
                let mut record = record.clone();
                // The top bit of `created_at` is the store's own flag
                // (`MOVED`), and `u64::MAX` marks a cycle's reservation: a
                // caller's record can set neither (no real time reaches that
                // bit; such a record simply expires by its `expires_at`).
                record.created_at = flag_moved(record.created_at, false);
                v.insert(record);
            }
        }
        self.file([(bucket_of(record.expires_at), *id)]);
        Ok(true)
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, expires_at: Timestamp) -> SaveOutcome {
        let now = Timestamp::now();
        self.maintain(now);
        let (removed, outcome) = match self.map.entry(*id) {
            Entry::Vacant(_) => return SaveOutcome::Gone,
            Entry::Occupied(e) if is_reservation(e.get()) => return SaveOutcome::Gone,
            Entry::Occupied(e) if e.get().expires_at <= now => (e.remove(), SaveOutcome::Gone),
            Entry::Occupied(mut e) => {
                let record = e.get_mut();
                record.items.apply(changes);
                if !record.items.is_empty() {
                    record.expires_at = record.expires_at.max(expires_at);
                    return SaveOutcome::Saved;
                }
                (e.remove(), SaveOutcome::Deleted)
            }
        };
        self.forget(id, &removed);
        outcome
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> CycleOutcome {
        let now = Timestamp::now();
        self.maintain(now);
        let public_id = match self.map.get(old) {
            Some(r) if !is_reservation(&r) => r.public_id,
            _ => return CycleOutcome::Gone,
        };
        // The lock `end` takes for this session: whichever of the two runs
        // second sees what the first did.
        let stripe = self.stripe(&public_id);
        // Hold the new id first, so that a collision changes nothing and the
        // old id is never seen gone and then back.
        match self.map.entry(*new) {
            Entry::Occupied(_) => return CycleOutcome::Collision,
            Entry::Vacant(v) => {
                v.insert(reservation(public_id));
            }
        }
        let unreserve = || {
            self.map.remove_if(new, |_, r| is_reservation(r));
        };
        let Some((_, mut record)) = self
            .map
            .remove_if(old, |_, r| r.public_id == public_id && !is_reservation(r))
        else {
            unreserve();
            return CycleOutcome::Gone;
        };
        if record.expires_at <= now {
            unreserve();
            self.forget(old, &record);
            return CycleOutcome::Gone;
        }
        record.items.apply(changes);
        if record.items.is_empty() {
            unreserve();
            self.forget(old, &record);
            return CycleOutcome::Deleted;
        }
        record.expires_at = record.expires_at.max(expires_at);
        record.created_at = flag_moved(record.created_at, true);
        let at = bucket_of(record.expires_at);
        // Remembered before the session appears under `new`, so that any
        // removal of it from then on also forgets the move.
        self.moves.insert(public_id, *new);
        match self.map.get_mut(new) {
            Some(mut held) => *held = record,
            // Nothing removes a reservation but its owner; kept total.
            None => {
                self.map.insert(*new, record);
            }
        }
        drop(stripe);
        self.file([(at, *new)]);
        CycleOutcome::Moved
    }

    fn delete(&self, id: &SessionId) {
        self.maintain(Timestamp::now());
        if let Some((_, record)) = self.map.remove_if(id, |_, r| !is_reservation(r)) {
            self.forget(id, &record);
        }
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) {
        self.maintain(Timestamp::now());
        let _stripe = self.stripe(public_id);
        if let Some((_, record)) = self.map.remove_if(id, |_, r| !is_reservation(r)) {
            self.forget(id, &record);
        }
        // Wherever a cycle moved it. Under the stripe lock, no cycle of this
        // session is halfway.
        if let Some((_, at)) = self.moves.remove(public_id) {
            if let Some((_, record)) = self
                .map
                .remove_if(&at, |_, r| r.public_id == *public_id && !is_reservation(r))
            {
                self.forget(&at, &record);
            }
        }
    }

    fn touch(&self, id: &SessionId, expires_at: Timestamp) -> bool {
        let now = Timestamp::now();
        self.maintain(now);
        match self.map.get_mut(id) {
            Some(mut r) if !is_reservation(&r) && r.expires_at > now => {
                r.expires_at = r.expires_at.max(expires_at);
                true
            }
            _ => false,
        }
    }
}

/// Every operation is a synchronous map operation: the store answers at
/// once ([`StoreFuture::ready`]), so the layer runs it in place.
impl SessionStore for MemoryStore {
    fn load(&self, id: &SessionId) -> StoreFuture<Option<Record>> {
        StoreFuture::ready(Ok(self.inner.load(id)))
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        StoreFuture::ready(self.inner.create(id, record))
    }

    fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> StoreFuture<SaveOutcome> {
        StoreFuture::ready(Ok(self.inner.save(id, changes, expires_at)))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> StoreFuture<CycleOutcome> {
        StoreFuture::ready(Ok(self.inner.cycle(old, new, changes, expires_at)))
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

    fn touch(&self, id: &SessionId, expires_at: Timestamp) -> StoreFuture<bool> {
        StoreFuture::ready(Ok(self.inner.touch(id, expires_at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_millis() -> u64 {
        Timestamp::now().as_millis()
    }

    fn ts(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }
    use crate::store::Items;
    use std::time::Duration;

    fn record(now: u64, ttl_ms: u64, items: &[(&str, &str)]) -> Record {
        Record {
            items: items.iter().copied().collect::<Items>(),
            created_at: ts(now),
            expires_at: ts(now + ttl_ms),
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
        let out = store.save(&id, &set("b", "2"), ts(now + 60_000)).await.unwrap();
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
            store.save(&id, &c, ts(now)).await.unwrap(),
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
            .cycle(&old, &new, &set("b", "2"), ts(now + 1))
            .await
            .unwrap();
        assert_eq!(out, CycleOutcome::Moved);
        assert!(store.load(&old).await.unwrap().is_none());
        let r = store.load(&new).await.unwrap().unwrap();
        assert_eq!(r.items.get("a"), Some("1"));
        assert_eq!(r.items.get("b"), Some("2"));
    }

    /// The store's own mark on a cycled session never reaches a load: the
    /// absolute timeout counts from the `created_at` the session was made
    /// with, across any number of cycles.
    #[tokio::test]
    async fn cycled_sessions_load_with_the_created_at_they_were_made_with() {
        let store = MemoryStore::new();
        let now = now_millis();
        let r = record(now - 5_000, 60_000, &[("a", "1")]);
        let mut id = SessionId::generate();
        store.create(&id, &r).await.unwrap();
        for _ in 0..3 {
            let n = SessionId::generate();
            let out = store.cycle(&id, &n, &set("b", "2"), ts(now + 60_000)).await;
            assert_eq!(out.unwrap(), CycleOutcome::Moved);
            id = n;
            let loaded = store.load(&id).await.unwrap().unwrap();
            assert_eq!(loaded.created_at, ts(now - 5_000));
            assert_eq!(loaded.public_id, r.public_id);
        }
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
        let out = store.cycle(&old, &new, &set("b", "2"), ts(now)).await.unwrap();
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
        assert!(store.touch(&id, ts(now + 10_000)).await.unwrap());
        tokio::time::advance(Duration::from_secs(3)).await;
        store.inner.sweep(Timestamp::now(), 1000, true);
        assert!(store.load(&id).await.unwrap().is_some());
        tokio::time::advance(Duration::from_secs(8)).await;
        store.inner.sweep(Timestamp::now(), 1000, true);
        assert!(store.is_empty());
    }

    /// A record handed to `create` cannot pose as the store's own markers:
    /// a `created_at` with the top bit set (the `MOVED` flag) or equal to
    /// `u64::MAX` (a cycle's reservation, with `expires_at` 0) is stored
    /// without that bit, counted, and reclaimed like any expired session.
    #[tokio::test]
    async fn records_cannot_forge_the_stores_markers() {
        let store = MemoryStore::new().with_max_sessions(2);
        let forged = SessionId::generate();
        let reservation_like = Record {
            items: [("a", "1")].into_iter().collect(),
            created_at: Timestamp::MAX,
            expires_at: Timestamp::UNIX_EPOCH,
            public_id: crate::PublicId::generate(),
        };
        assert!(store.create(&forged, &reservation_like).await.unwrap());
        assert!(store.load(&forged).await.unwrap().is_none(), "expired at 0");
        assert_eq!(store.len(), 0, "reclaimed, not stuck as a reservation");
        let flagged = SessionId::generate();
        let mut r = record(now_millis(), 60_000, &[("a", "1")]);
        r.created_at = flag_moved(r.created_at, true);
        assert!(store.create(&flagged, &r).await.unwrap());
        store.delete(&flagged).await.unwrap();
        assert_eq!(store.len(), 0);
        // The store is not left full by either.
        for _ in 0..2 {
            assert!(store
                .create(
                    &SessionId::generate(),
                    &record(now_millis(), 60_000, &[("a", "1")])
                )
                .await
                .unwrap());
        }
    }

    /// Row 31: a full store makes room from a session that expired a few
    /// milliseconds ago, within the current second (the index files it
    /// under the second's end).
    #[tokio::test(start_paused = true)]
    async fn full_store_reclaims_a_session_expired_within_the_current_second() {
        let store = MemoryStore::new().with_max_sessions(1);
        // 100 ms into a second, so the whole test stays within it.
        let at = now_millis() % 1000;
        tokio::time::advance(Duration::from_millis((1100 - at) % 1000)).await;
        let now = now_millis();
        let short = SessionId::generate();
        assert!(store
            .create(&short, &record(now, 5, &[("a", "1")]))
            .await
            .unwrap());
        tokio::time::advance(Duration::from_millis(20)).await;
        let id = SessionId::generate();
        let created = store
            .create(&id, &record(now_millis(), 60_000, &[("a", "1")]))
            .await;
        assert!(
            matches!(created, Ok(true)),
            "an expired session must make room: {created:?}"
        );
        assert_eq!(store.len(), 1);
        // A live one is never evicted to make room.
        let err = store
            .create(
                &SessionId::generate(),
                &record(now_millis(), 60_000, &[("a", "1")]),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Full);
        assert!(store.load(&id).await.unwrap().is_some());
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
        store
            .inner
            .wheel()
            .chunks
            .values()
            .map(Vec::len)
            .sum::<usize>()
            + store.inner.moves.len()
    }

    /// Sign-in/sign-out churn through every way a session can go (delete,
    /// end, an emptying save, a cycle that empties it, found expired on
    /// load, reclaimed when due), each with and without a cycle first: with no session
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
            // Every way out, for sessions cycled before (8 rounds out of
            // 16) and sessions never cycled.
            if i % 16 < 8 {
                let n = SessionId::generate();
                let out = store.cycle(&id, &n, &set("user", "u"), ts(now + ttl)).await;
                assert_eq!(out.unwrap(), CycleOutcome::Moved);
                id = n;
            }
            match i % 8 {
                0 | 1 => store.delete(&id).await.unwrap(),
                2 | 3 => store.end(&id, &p).await.unwrap(),
                4 => {
                    let out = store.save(&id, &empty, ts(now + ttl)).await.unwrap();
                    assert_eq!(out, SaveOutcome::Deleted);
                }
                5 => {
                    let n = SessionId::generate();
                    let out = store.cycle(&id, &n, &empty, ts(now + ttl)).await.unwrap();
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
        assert_eq!(store.inner.moves.len(), 0, "a move outlived its session");
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
                let out = store.cycle(id, &n, &set("r", "1"), ts(now + 3_600_000)).await;
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
            let out = s.inner.cycle(&old, &new, &set("b", "2"), ts(now + 60_000));
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
                    let _ = store.inner.cycle(&a, &b, &set("b", "2"), ts(now + 60_000));
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

    fn futures_now<T>(mut f: StoreFuture<T>) -> Result<T, StoreError> {
        match f.answer(None) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("MemoryStore answers at once"),
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
