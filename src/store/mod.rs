//! The [`SessionStore`] trait and the data it moves: [`Record`], [`Items`],
//! [`ChangeSet`].
//!
//! A store is asked for exactly the operations the layer's semantics need:
//! load a session, create one only if its id is free, apply a change set only
//! if the session still exists, move a session to a new id, delete one, and
//! push its expiry forward. Each is one call, so a network store can make each
//! one round trip.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::error::StoreError;
use crate::id::{PublicId, SessionId};

pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// A storage backend for sessions.
///
/// All times are milliseconds since the Unix epoch. `expires_at` is the moment
/// the session stops being valid; a store should forget the session then (a
/// TTL), but it need not be exact: the layer checks the times of every record
/// it loads and deletes one that has expired.
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
/// version of this). Methods may be written as `async fn`.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use tower_session_storage::store::{ChangeSet, CycleOutcome, Record, SaveOutcome};
/// use tower_session_storage::{PublicId, SessionId, SessionLayer, SessionStore, StoreError};
///
/// #[derive(Default)]
/// struct MyStore(Mutex<HashMap<SessionId, Record>>);
///
/// impl MyStore {
///     fn map(&self) -> Result<std::sync::MutexGuard<'_, HashMap<SessionId, Record>>, StoreError> {
///         self.0.lock().map_err(|_| StoreError::other("lock poisoned"))
///     }
/// }
///
/// impl SessionStore for MyStore {
///     async fn load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
///         Ok(self.map()?.get(id).cloned())
///     }
///
///     async fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
///         let mut map = self.map()?;
///         if map.contains_key(id) {
///             return Ok(false); // taken: the layer retries with a fresh id
///         }
///         map.insert(*id, record.clone());
///         Ok(true)
///     }
///
///     async fn save(
///         &self,
///         id: &SessionId,
///         changes: &ChangeSet,
///         expires_at: u64,
///     ) -> Result<SaveOutcome, StoreError> {
///         let mut map = self.map()?;
///         let Some(record) = map.get_mut(id) else {
///             return Ok(SaveOutcome::Gone); // destroyed meanwhile: drop the changes
///         };
///         record.items.apply(changes);
///         record.expires_at = record.expires_at.max(expires_at);
///         if record.items.is_empty() {
///             map.remove(id);
///             return Ok(SaveOutcome::Deleted);
///         }
///         Ok(SaveOutcome::Saved)
///     }
///
///     async fn cycle(
///         &self,
///         old: &SessionId,
///         new: &SessionId,
///         changes: &ChangeSet,
///         expires_at: u64,
///     ) -> Result<CycleOutcome, StoreError> {
///         let mut map = self.map()?;
///         if map.contains_key(new) {
///             return Ok(CycleOutcome::Collision);
///         }
///         let Some(mut record) = map.remove(old) else {
///             return Ok(CycleOutcome::Gone);
///         };
///         record.items.apply(changes);
///         if record.items.is_empty() {
///             return Ok(CycleOutcome::Deleted);
///         }
///         record.expires_at = record.expires_at.max(expires_at);
///         map.insert(*new, record);
///         Ok(CycleOutcome::Moved)
///     }
///
///     async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
///         self.map()?.remove(id);
///         Ok(())
///     }
///
///     async fn end(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
///         // The session under `id`, and under whatever id `cycle` moved it to.
///         self.map()?.retain(|k, r| k != id && r.public_id != *public_id);
///         Ok(())
///     }
///
///     async fn touch(&self, id: &SessionId, expires_at: u64) -> Result<bool, StoreError> {
///         Ok(match self.map()?.get_mut(id) {
///             Some(r) => {
///                 r.expires_at = r.expires_at.max(expires_at);
///                 true
///             }
///             None => false,
///         })
///     }
/// }
///
/// let layer = SessionLayer::new(MyStore::default());
/// # let _ = layer;
/// ```
///
/// [`MemoryStore`]: crate::MemoryStore
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a session. `Ok(None)` when the id is unknown (never seen, deleted
    /// or evicted). A record whose data cannot be read should be deleted,
    /// logged, and reported as `Ok(None)`.
    fn load(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Stores a new session only if `id` is free. `Ok(false)` when the id is
    /// taken; the layer then retries with a fresh id. Never overwrites.
    fn create(
        &self,
        id: &SessionId,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Applies `changes` to the session if it still exists, and moves its
    /// expiry forward to `expires_at` (never backward). A session left with no
    /// items is deleted ([`SaveOutcome::Deleted`]). A session that no longer
    /// exists stays gone ([`SaveOutcome::Gone`]).
    fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> impl Future<Output = Result<SaveOutcome, StoreError>> + Send;

    /// Moves the session from `old` to `new`, applying `changes` on the way;
    /// afterwards `old` is unknown. If `new` is taken, changes nothing and
    /// returns [`CycleOutcome::Collision`] (the layer retries with another id).
    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> impl Future<Output = Result<CycleOutcome, StoreError>> + Send;

    /// Deletes the session. Deleting an unknown id is not an error.
    ///
    /// The layer uses it for a session found expired on load; a logout uses
    /// [`end`](Self::end).
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<(), StoreError>> + Send;

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
    fn end(
        &self,
        id: &SessionId,
        public_id: &PublicId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the session's expiry forward to `expires_at` (never backward).
    /// `Ok(false)` when the session no longer exists.
    fn touch(
        &self,
        id: &SessionId,
        expires_at: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Whether every future this store returns is ready the first time it is
    /// polled: an in-process store that does no I/O and never waits.
    ///
    /// The layer then runs the store calls in place, with no allocation for
    /// them, instead of keeping them in a boxed future. The default is
    /// `false`, right for any store that talks to a server. A store that says
    /// `true` and then returns a pending future makes that request fail with
    /// `500` (and an error event); it never hangs or panics.
    fn answers_immediately(&self) -> bool {
        false
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
/// use tower_session_storage::store::{Items, Record};
/// use tower_session_storage::PublicId;
///
/// let items: Items = [("user_id", "12345")].into_iter().collect();
/// let record = Record { items, created_at: 1_000, expires_at: 61_000, public_id: PublicId::generate() };
/// assert_eq!(record.items.get("user_id"), Some("12345"));
/// ```
#[derive(Clone, Debug)]
pub struct Record {
    /// The items, shared: cloning a record does not copy them.
    pub items: Items,
    /// When the session was created (ms since the Unix epoch); the absolute
    /// timeout counts from here.
    pub created_at: u64,
    /// When the session expires unless it is used again (ms since the Unix
    /// epoch).
    pub expires_at: u64,
    /// The session's public name, made when it is created and kept for its
    /// whole life, across [`SessionStore::cycle`]. Stores keep it with the
    /// session and use it in [`SessionStore::end`].
    pub public_id: PublicId,
}

/// The items of one session: string keys to string values, sorted by key.
///
/// Compact on purpose: sessions are many and usually hold a handful of small
/// items, so all of them live in **one** shared, immutable allocation (an
/// `Arc<str>`), packed as `<key length>:<key><value length>:<value>…` in key
/// order (lengths in ASCII decimal, so the buffer stays a `str`). Cloning is
/// a reference-count increment: a load hands out the same buffer, never a
/// copy. Reads scan it (a session holds few items); every change builds a
/// new buffer of exactly the right size (one pass to measure, one to write)
/// and leaves other holders' snapshots as they were.
/// `Debug` prints only the item count.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::Items;
///
/// let mut items = Items::new();
/// items.insert("b", "2");
/// items.insert("a", "1");
/// assert_eq!(items.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
/// assert_eq!(items.remove("a").as_deref(), Some("1"));
/// assert_eq!(items.len(), 1);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Items {
    buf: Option<Arc<str>>,
}

/// Splits one `<len>:<bytes>` field off the front of `s`.
fn take_field(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut len: usize = 0;
    let mut colon = 0;
    loop {
        let c = *bytes.get(colon)?;
        if c == b':' {
            break;
        }
        let digit = c.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        len = len.checked_mul(10)?.checked_add(usize::from(digit))?;
        colon += 1;
    }
    if colon == 0 {
        return None;
    }
    let start = colon + 1;
    let end = start.checked_add(len)?;
    Some((s.get(start..end)?, s.get(end..)?))
}

fn decimal_len(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn push_field(out: &mut String, field: &str) {
    let mut digits = [0u8; 20];
    let mut n = field.len();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
    out.push(':');
    out.push_str(field);
}

/// The items in key order, straight off the packed buffer.
#[derive(Debug, Clone)]
pub struct ItemsIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ItemsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (k, rest) = take_field(self.rest)?;
        let (v, rest) = take_field(rest)?;
        self.rest = rest;
        Some((k, v))
    }
}

impl Items {
    /// No items.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        for (k, v) in self.iter() {
            match k.cmp(key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Some(v),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: &str, value: &str) -> Option<Box<str>> {
        let old = self.get(key).map(Box::from);
        let mut c = ChangeSet::new();
        c.set(key, value);
        self.apply(&c);
        old
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Box<str>> {
        let old = self.get(key).map(Box::from)?;
        let mut c = ChangeSet::new();
        c.remove(key);
        self.apply(&c);
        Some(old)
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.buf = None;
    }

    /// Whether two snapshots share one buffer (as a load and the stored
    /// session do until either changes).
    pub fn ptr_eq(a: &Items, b: &Items) -> bool {
        match (&a.buf, &b.buf) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.buf.is_none()
    }

    /// The items in key order.
    pub fn iter(&self) -> ItemsIter<'_> {
        ItemsIter {
            rest: self.buf.as_deref().unwrap_or_default(),
        }
    }

    /// The size the session limits count: the bytes of every key and value.
    pub fn byte_size(&self) -> usize {
        self.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// Applies a change set: the clear first (if any), then each key's change.
    pub fn apply(&mut self, changes: &ChangeSet) {
        *self = self.applied(changes);
    }

    /// These items with a change set applied, leaving `self` as it is.
    pub fn applied(&self, changes: &ChangeSet) -> Items {
        let mut len = 0;
        self.merge(changes, |k, v| {
            len += decimal_len(k.len()) + 1 + k.len() + decimal_len(v.len()) + 1 + v.len();
        });
        let mut out = String::with_capacity(len);
        self.merge(changes, |k, v| {
            push_field(&mut out, k);
            push_field(&mut out, v);
        });
        Items {
            buf: (!out.is_empty()).then(|| Arc::from(out)),
        }
    }

    /// Calls `emit` for every item of the result of applying `changes`, in
    /// key order.
    fn merge<'a>(&'a self, changes: &'a ChangeSet, mut emit: impl FnMut(&'a str, &'a str)) {
        let mut old = if changes.cleared {
            ItemsIter { rest: "" }
        } else {
            self.iter()
        }
        .peekable();
        let mut new = changes.iter().peekable();
        loop {
            match (old.peek(), new.peek()) {
                (Some(&(ok, ov)), Some(&(nk, nv))) => match ok.cmp(nk) {
                    std::cmp::Ordering::Less => {
                        emit(ok, ov);
                        old.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(v) = nv {
                            emit(nk, v);
                        }
                        old.next();
                        new.next();
                    }
                    std::cmp::Ordering::Greater => {
                        if let Some(v) = nv {
                            emit(nk, v);
                        }
                        new.next();
                    }
                },
                (Some(&(ok, ov)), None) => {
                    emit(ok, ov);
                    old.next();
                }
                (None, Some(&(nk, nv))) => {
                    if let Some(v) = nv {
                        emit(nk, v);
                    }
                    new.next();
                }
                (None, None) => break,
            }
        }
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Items {
    /// Later pairs win over earlier ones with the same key.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut changes = ChangeSet::new();
        for (k, v) in iter {
            changes.set(k.as_ref(), v.as_ref());
        }
        Items::new().applied(&changes)
    }
}

impl fmt::Debug for Items {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Items").field("len", &self.len()).finish()
    }
}

/// What one request changed: per key, the new value or a removal, plus
/// whether every item was cleared first.
///
/// Applying per-key changes (rather than writing back a whole snapshot) is
/// what keeps two concurrent requests that write different keys from losing
/// each other's writes. `Debug` prints only counts.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::{ChangeSet, Items};
///
/// let mut items: Items = [("a", "1"), ("b", "2")].into_iter().collect();
/// let mut changes = ChangeSet::new();
/// changes.set("c", "3");
/// changes.remove("a");
/// items.apply(&changes);
/// assert_eq!(items.iter().collect::<Vec<_>>(), [("b", "2"), ("c", "3")]);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    cleared: bool,
    changes: Vec<(Box<str>, Option<Box<str>>)>,
}

impl ChangeSet {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.changes.binary_search_by(|(k, _)| (**k).cmp(key))
    }

    fn put(&mut self, key: &str, value: Option<Box<str>>) {
        match self.position(key) {
            Ok(i) => self.changes[i].1 = value,
            Err(i) => self.changes.insert(i, (key.into(), value)),
        }
    }

    /// Records `key = value`.
    pub fn set(&mut self, key: &str, value: &str) {
        self.put(key, Some(value.into()));
    }

    /// Records the removal of `key`.
    pub fn remove(&mut self, key: &str) {
        self.put(key, None);
    }

    /// Records "remove every item", dropping the changes recorded so far.
    pub fn clear(&mut self) {
        self.cleared = true;
        self.changes.clear();
    }

    /// Whether every item is removed before the per-key changes apply.
    pub fn cleared(&self) -> bool {
        self.cleared
    }

    /// The change recorded for `key`: `Some(Some(v))` set, `Some(None)`
    /// removed, `None` untouched.
    pub fn get(&self, key: &str) -> Option<Option<&str>> {
        self.position(key)
            .ok()
            .map(|i| self.changes[i].1.as_deref())
    }

    /// The per-key changes in key order: `Some(value)` to set, `None` to remove.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.changes.iter().map(|(k, v)| (&**k, v.as_deref()))
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.changes.is_empty()
    }

    /// Whether any key is set (as opposed to only removals or a clear).
    pub fn sets_any(&self) -> bool {
        self.changes.iter().any(|(_, v)| v.is_some())
    }
}

impl fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeSet")
            .field("cleared", &self.cleared)
            .field("changes", &self.changes.len())
            .finish()
    }
}

/// The wall clock in ms since the Unix epoch, as it is now.
///
/// Read afresh on every call (`SystemTime::now()`), so a clock corrected
/// after start-up (an NTP step at boot, an operator fixing the time) is
/// followed at once: sessions are never created already expired, and never
/// kept past their time, because of a correction the process missed.
///
/// Tests can still pause and advance time: the reading is shifted by how far
/// tokio's clock is from the real monotonic clock. With tokio's clock running
/// normally the two agree (the shift is zero); with it paused
/// (`#[tokio::test(start_paused = true)]`) the wall clock stands still except
/// for `tokio::time::advance`.
pub(crate) fn now_millis() -> u64 {
    use std::time::{Instant, UNIX_EPOCH};
    let wall = wall_clock()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let real = Instant::now();
    let tokio = tokio::time::Instant::now().into_std();
    // Sub-millisecond differences are the two clocks being read a few
    // nanoseconds apart: ignore them.
    match tokio.checked_duration_since(real) {
        Some(ahead) => wall.saturating_add(ahead.as_millis() as u64),
        None => wall.saturating_sub(real.duration_since(tokio).as_millis() as u64),
    }
}

#[cfg(not(test))]
fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// In unit tests, the system clock can be stepped (as NTP or an operator
/// would) with [`step_wall_clock`].
#[cfg(test)]
fn wall_clock() -> std::time::SystemTime {
    let step = WALL_STEP.with(std::cell::Cell::get);
    let now = std::time::SystemTime::now();
    if step >= 0 {
        now + std::time::Duration::from_millis(step as u64)
    } else {
        now - std::time::Duration::from_millis(step.unsigned_abs())
    }
}

#[cfg(test)]
thread_local! {
    static WALL_STEP: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Steps this thread's system clock by `ms` (negative: back), as an NTP
/// correction would. Unit tests only.
#[cfg(test)]
pub(crate) fn step_wall_clock(ms: i64) {
    WALL_STEP.with(|s| s.set(s.get() + ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_stay_sorted_and_unique() {
        let mut items = Items::new();
        for k in ["m", "c", "x", "a", "c"] {
            items.insert(k, k);
        }
        let keys: Vec<_> = items.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "c", "m", "x"]);
        assert_eq!(items.byte_size(), 8);
    }

    #[test]
    fn clear_then_set_applies_in_that_order() {
        let mut items: Items = [("a", "1"), ("b", "2")].into_iter().collect();
        let mut c = ChangeSet::new();
        c.set("a", "x");
        c.clear();
        c.set("z", "9");
        items.apply(&c);
        assert_eq!(items.iter().collect::<Vec<_>>(), [("z", "9")]);
    }

    #[test]
    fn packing_survives_separators_digits_and_unicode_in_items() {
        let pairs = [
            ("", "empty key"),
            ("1:x", "2:yy"),
            ("k", ""),
            ("ключ", "значение ✓"),
            ("z", &"9".repeat(12_345)),
        ];
        let items: Items = pairs.iter().copied().collect();
        assert_eq!(items.len(), 5);
        for (k, v) in pairs {
            assert_eq!(items.get(k), Some(v), "{k}");
        }
        assert_eq!(items.get("1:"), None);
        let mut sorted = pairs.to_vec();
        sorted.sort();
        assert_eq!(items.iter().collect::<Vec<_>>(), sorted);
    }

    proptest::proptest! {
        /// The packed buffer behaves like a sorted map under any sequence of
        /// change sets, whatever the keys and values hold (digits, `:`,
        /// empty strings, non-ASCII).
        #[test]
        fn packed_items_match_a_sorted_map(
            steps in proptest::collection::vec(
                (
                    proptest::bool::weighted(0.1),
                    proptest::collection::vec(
                        ("[0-9:a-c\u{e9}]{0,4}", proptest::option::of("[0-9:x\u{20ac}]{0,6}")),
                        0..6,
                    ),
                ),
                0..12,
            )
        ) {
            let mut items = Items::new();
            let mut model = std::collections::BTreeMap::<String, String>::new();
            for (clear, changes) in steps {
                let mut c = ChangeSet::new();
                if clear {
                    c.clear();
                    model.clear();
                }
                for (k, v) in changes {
                    match v {
                        Some(v) => {
                            c.set(&k, &v);
                            model.insert(k, v);
                        }
                        None => {
                            c.remove(&k);
                            model.remove(&k);
                        }
                    }
                }
                items.apply(&c);
                let got: Vec<(&str, &str)> = items.iter().collect();
                let want: Vec<(&str, &str)> =
                    model.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                proptest::prop_assert_eq!(&got, &want);
                proptest::prop_assert_eq!(items.len(), model.len());
                proptest::prop_assert_eq!(items.is_empty(), model.is_empty());
                for (k, v) in &model {
                    proptest::prop_assert_eq!(items.get(k), Some(v.as_str()));
                }
                proptest::prop_assert_eq!(items.get("not-a-key\u{1}"), None);
            }
        }
    }

    #[test]
    fn the_wall_clock_is_followed_when_it_is_stepped_after_start_up() {
        let before = now_millis();
        // The clock was two hours behind at start-up; NTP fixes it.
        step_wall_clock(2 * 3600 * 1000);
        let after = now_millis();
        step_wall_clock(-2 * 3600 * 1000);
        assert!(
            after >= before + 2 * 3600 * 1000,
            "a wall clock stepped forward by 2 h must be seen: {before} -> {after}"
        );
        let back = now_millis();
        assert!(back < after, "a step back is followed too");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_stands_still_and_advances_exactly() {
        let a = now_millis();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now_millis();
        assert!(
            a.abs_diff(b) <= 2,
            "paused: real time does not move it ({a} -> {b})"
        );
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        let c = now_millis();
        assert!(c.abs_diff(b + 90_000) <= 2, "{b} -> {c}");
    }

    #[test]
    fn applied_leaves_the_original_alone() {
        let items: Items = [("a", "1"), ("b", "2")].into_iter().collect();
        let mut c = ChangeSet::new();
        c.remove("a");
        c.set("c", "3");
        let next = items.applied(&c);
        assert_eq!(items.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(next.iter().collect::<Vec<_>>(), [("b", "2"), ("c", "3")]);
    }

    #[test]
    fn debug_hides_keys_and_values() {
        let items: Items = [("secret_key", "secret_value")].into_iter().collect();
        let mut c = ChangeSet::new();
        c.set("secret_key", "secret_value");
        for s in [format!("{items:?}"), format!("{c:?}")] {
            assert!(!s.contains("secret"), "{s}");
        }
    }
}
