//! [`Items`] and [`ChangeSet`]: a session's data and a request's changes to it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::meta::MetaChanges;

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
    /// Link and lifetime changes; `None` (no allocation) when there are none.
    meta: Option<Box<MetaChanges>>,
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

    /// Whether nothing was changed: no item, no link, no lifetime setting.
    pub fn is_empty(&self) -> bool {
        !self.cleared && self.changes.is_empty() && self.meta.is_none()
    }

    fn meta_mut(&mut self) -> &mut MetaChanges {
        self.meta.get_or_insert_with(Default::default)
    }

    /// Records the link `name = value` (replacing the session's value for
    /// `name`). Unchecked: [`SessionStorage::link`](crate::SessionStorage::link)
    /// checks names, values and the count before it records one.
    pub fn link(&mut self, name: &str, value: &str) {
        self.meta_mut().put(name, Some(value));
    }

    /// Records the removal of the link named `name`.
    pub fn unlink(&mut self, name: &str) {
        self.meta_mut().put(name, None);
    }

    /// Records the session's own idle timeout.
    pub fn set_idle_timeout(&mut self, timeout: Duration) {
        self.meta_mut().idle_timeout = Some(timeout);
    }

    /// Records the session's own cookie persistence.
    pub fn set_persistent_cookie(&mut self, persistent: bool) {
        self.meta_mut().persistent_cookie = Some(persistent);
    }

    /// The link changes in name order: `Some(value)` links, `None` unlinks.
    pub fn links(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.meta
            .as_deref()
            .map_or(&[][..], |m| &m.links[..])
            .iter()
            .map(|(n, v)| (&**n, v.as_deref()))
    }

    /// The idle timeout this change set gives the session, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.meta.as_deref().and_then(|m| m.idle_timeout)
    }

    /// The cookie persistence this change set gives the session, if any.
    pub fn persistent_cookie(&self) -> Option<bool> {
        self.meta.as_deref().and_then(|m| m.persistent_cookie)
    }

    /// Whether the session's links or lifetime settings change.
    pub fn changes_meta(&self) -> bool {
        self.meta.is_some()
    }

    /// Whether the session gets a new idle timeout: a store then sets the
    /// expiry to the one the write carries, even when that is earlier than
    /// the stored one (a shorter timeout takes effect at once).
    pub fn sets_idle_timeout(&self) -> bool {
        self.idle_timeout().is_some()
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
            .field("links", &self.links().count())
            .finish()
    }
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
