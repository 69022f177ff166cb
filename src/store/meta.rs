//! [`Meta`]: what a session keeps besides its items (its links and its own
//! lifetime settings), and the rules a link must follow.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::ChangeSet;

/// The most links (names) one session holds.
pub const MAX_LINKS: usize = 8;
/// The longest link name, in bytes.
pub const MAX_LINK_NAME: usize = 32;
/// The longest link value, in bytes (an OpenID Connect `sub` is at most 255
/// ASCII characters).
pub const MAX_LINK_VALUE: usize = 256;

/// Why a link name or value is refused, or `None` when it is fine.
///
/// A name is 1 to [`MAX_LINK_NAME`] bytes of ASCII letters, digits, `_`,
/// `-` and `.`; a value is 1 to [`MAX_LINK_VALUE`] bytes with no control
/// characters. So a store can build an index key from them without escaping
/// ambiguity, and a log line shows them as they are.
pub(crate) fn link_problem(name: &str, value: Option<&str>) -> Option<&'static str> {
    if name.is_empty() || name.len() > MAX_LINK_NAME {
        return Some("a link name must be 1 to 32 bytes long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Some("a link name may hold only ASCII letters, digits, '_', '-' and '.'");
    }
    if let Some(value) = value {
        if value.is_empty() || value.len() > MAX_LINK_VALUE {
            return Some("a link value must be 1 to 256 bytes long");
        }
        if value.chars().any(char::is_control) {
            return Some("a link value may not hold control characters");
        }
    }
    None
}

/// Whether `name = value` is a link a session could hold (see
/// [`SessionStorage::link`](crate::SessionStorage::link)). Stores and the
/// registry use it to answer "no such session" for a name or value no
/// session can have, without a look-up.
pub fn is_valid_link(name: &str, value: &str) -> bool {
    link_problem(name, Some(value)).is_none()
}

/// What a session keeps besides its items: its links (name → value, for
/// the [`SessionRegistry`](crate::SessionRegistry)) and its own lifetime
/// settings (an idle timeout and cookie persistence that override the
/// layer's for this session).
///
/// Compact, as [`Items`](super::Items) are: a session with no links and the
/// layer's settings holds nothing here; otherwise everything is packed into
/// **one** shared allocation, so cloning a record does not copy it, and a
/// signed-in session in the memory store costs one small block for all of
/// it. Changes build a new buffer (they are rare: a sign-in, a sign-out).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_session_storage::store::{ChangeSet, Meta};
///
/// let mut changes = ChangeSet::new();
/// changes.link("user", "alice");
/// changes.set_idle_timeout(Duration::from_secs(3600));
/// let meta = Meta::new().applied(&changes);
/// assert_eq!(meta.link("user"), Some("alice"));
/// assert_eq!(meta.idle_timeout(), Some(Duration::from_secs(3600)));
/// assert_eq!(meta.persistent_cookie(), None, "the layer's setting");
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Meta(Option<Arc<str>>);

/// `Meta`'s buffer: `<idle ms>\0<persistent>\0` (each may be empty: the
/// layer's; persistent is `0` or `1`), then `<name>\0<value>\0` per link in
/// name order. Names and values hold no control character (the link
/// rules), so NUL separates them unambiguously; [`Meta::set_link`] refuses
/// anything else.
struct Unpacked<'a> {
    idle: Option<Duration>,
    persistent: Option<bool>,
    links: Vec<(&'a str, &'a str)>,
}

fn split_head(buf: &str) -> (&str, &str, &str) {
    let mut parts = buf.splitn(3, '\0');
    let idle = parts.next().unwrap_or("");
    let persistent = parts.next().unwrap_or("");
    (idle, persistent, parts.next().unwrap_or(""))
}

fn pack(
    idle: Option<Duration>,
    persistent: Option<bool>,
    links: &[(&str, &str)],
) -> Option<Arc<str>> {
    if idle.is_none() && persistent.is_none() && links.is_empty() {
        return None;
    }
    let mut buf = String::new();
    if let Some(d) = idle {
        buf.push_str(&d.as_millis().min(u128::from(u64::MAX)).to_string());
    }
    buf.push('\0');
    match persistent {
        Some(true) => buf.push('1'),
        Some(false) => buf.push('0'),
        None => {}
    }
    buf.push('\0');
    for (n, v) in links {
        buf.push_str(n);
        buf.push('\0');
        buf.push_str(v);
        buf.push('\0');
    }
    Some(Arc::from(buf))
}

/// The links of a [`Meta`], in name order.
#[derive(Clone, Debug)]
pub struct LinksIter<'a> {
    rest: &'a str,
    left: usize,
}

impl<'a> Iterator for LinksIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, rest) = self.rest.split_once('\0')?;
        let (value, rest) = rest.split_once('\0')?;
        self.rest = rest;
        self.left = self.left.saturating_sub(1);
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for LinksIter<'_> {}

impl Meta {
    /// No links, the layer's settings.
    pub fn new() -> Self {
        Self(None)
    }

    /// Whether there are no links and no settings of the session's own.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Whether the session holds at least one link.
    pub fn has_links(&self) -> bool {
        self.links().len() > 0
    }

    /// The links, sorted by name.
    pub fn links(&self) -> LinksIter<'_> {
        let rest = self.0.as_deref().map_or("", |b| split_head(b).2);
        LinksIter {
            rest,
            left: rest.bytes().filter(|&b| b == 0).count() / 2,
        }
    }

    /// The value linked under `name`.
    pub fn link(&self, name: &str) -> Option<&str> {
        self.links().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The session's own idle timeout; `None`: the layer's.
    pub fn idle_timeout(&self) -> Option<Duration> {
        let idle = split_head(self.0.as_deref()?).0;
        idle.parse().ok().map(Duration::from_millis)
    }

    /// The session's own cookie persistence; `None`: the layer's.
    pub fn persistent_cookie(&self) -> Option<bool> {
        match split_head(self.0.as_deref()?).1 {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        }
    }

    /// Links the session as `name = value`, replacing its value for `name`.
    /// For stores rebuilding a record; a handler uses
    /// [`SessionStorage::link`](crate::SessionStorage::link), which checks
    /// the count as well. A name or value that breaks the link rules
    /// ([`is_valid_link`]) is not set.
    pub fn set_link(&mut self, name: &str, value: &str) {
        if self.link(name) != Some(value) {
            let mut c = ChangeSet::new();
            c.link(name, value);
            self.apply(&c);
        }
    }

    /// Removes the link named `name`, if any.
    pub fn remove_link(&mut self, name: &str) {
        if self.link(name).is_some() {
            let mut c = ChangeSet::new();
            c.unlink(name);
            self.apply(&c);
        }
    }

    /// Sets (or, with `None`, drops) the session's own idle timeout
    /// (milliseconds are kept).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        if self.idle_timeout() != timeout {
            self.0 = pack(
                timeout,
                self.persistent_cookie(),
                &self.links().collect::<Vec<_>>(),
            );
        }
    }

    /// Sets (or, with `None`, drops) the session's own cookie persistence.
    pub fn set_persistent_cookie(&mut self, persistent: Option<bool>) {
        if self.persistent_cookie() != persistent {
            self.0 = pack(
                self.idle_timeout(),
                persistent,
                &self.links().collect::<Vec<_>>(),
            );
        }
    }

    /// Applies the link and lifetime changes of `changes` (its item changes
    /// are for [`Items::apply`](super::Items::apply)), building one new
    /// buffer.
    pub fn apply(&mut self, changes: &ChangeSet) {
        if !changes.changes_meta() {
            return;
        }
        let mut u = Unpacked {
            idle: self.idle_timeout(),
            persistent: self.persistent_cookie(),
            links: self.links().collect(),
        };
        for (name, value) in changes.links() {
            let at = u.links.binary_search_by(|(n, _)| (*n).cmp(name));
            match (value, at) {
                (Some(v), _) if !is_valid_link(name, v) => {}
                (Some(v), Ok(i)) => u.links[i].1 = v,
                (Some(v), Err(i)) => u.links.insert(i, (name, v)),
                (None, Ok(i)) => {
                    u.links.remove(i);
                }
                (None, Err(_)) => {}
            }
        }
        if let Some(t) = changes.idle_timeout() {
            u.idle = Some(t);
        }
        if let Some(p) = changes.persistent_cookie() {
            u.persistent = Some(p);
        }
        let packed = pack(u.idle, u.persistent, &u.links);
        self.0 = packed;
    }

    /// A copy with the changes of `changes` applied.
    #[must_use]
    pub fn applied(&self, changes: &ChangeSet) -> Meta {
        let mut meta = self.clone();
        meta.apply(changes);
        meta
    }
}

impl fmt::Debug for Meta {
    /// Link names and the settings; never a link's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Meta")
            .field("links", &self.links().map(|(n, _)| n).collect::<Vec<_>>())
            .field("idle_timeout", &self.idle_timeout())
            .field("persistent_cookie", &self.persistent_cookie())
            .finish()
    }
}

/// The link and lifetime changes of a [`ChangeSet`], boxed so a change set
/// that has none stays small.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct MetaChanges {
    /// Sorted by name: `Some(value)` links, `None` unlinks.
    pub(super) links: Vec<(Box<str>, Option<Box<str>>)>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) persistent_cookie: Option<bool>,
}

impl MetaChanges {
    pub(super) fn put(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(Box::from);
        match self.links.binary_search_by(|(n, _)| (**n).cmp(name)) {
            Ok(i) => self.links[i].1 = value,
            Err(i) => self.links.insert(i, (name.into(), value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_stays_empty_until_something_differs_from_the_layer() {
        let mut m = Meta::new();
        m.set_idle_timeout(None);
        m.remove_link("user");
        assert!(m.is_empty());
        m.set_link("user", "a");
        m.set_link("sid", "s");
        m.set_link("user", "b");
        assert_eq!(m.links().collect::<Vec<_>>(), [("sid", "s"), ("user", "b")]);
        m.set_idle_timeout(Some(Duration::from_millis(1500)));
        m.set_persistent_cookie(Some(false));
        assert_eq!(m.idle_timeout(), Some(Duration::from_millis(1500)));
        assert_eq!(m.persistent_cookie(), Some(false));
        assert_eq!(m.links().len(), 2);
        m.set_link("bad name", "x");
        m.set_link("user", "a\0b");
        assert_eq!(m.links().len(), 2, "nothing that breaks the rules is set");
        m.remove_link("user");
        m.remove_link("sid");
        m.set_idle_timeout(None);
        m.set_persistent_cookie(None);
        assert!(m.is_empty(), "back to a null pointer");
    }

    #[test]
    fn link_rules() {
        assert!(is_valid_link("user", "alice@example.com"));
        assert!(is_valid_link("a.b-c_9", &"x".repeat(256)));
        assert!(!is_valid_link("", "v"));
        assert!(!is_valid_link("us er", "v"));
        assert!(!is_valid_link("user:x", "v"));
        assert!(!is_valid_link("user{x}", "v"));
        assert!(!is_valid_link(&"n".repeat(33), "v"));
        assert!(!is_valid_link("user", ""));
        assert!(!is_valid_link("user", &"x".repeat(257)));
        assert!(!is_valid_link("user", "a\nb"));
        assert!(!is_valid_link("user", "a\u{7f}"));
    }

    #[test]
    fn debug_never_shows_a_value() {
        let mut m = Meta::new();
        m.set_link("user", "secret-subject");
        assert!(!format!("{m:?}").contains("secret"));
    }
}
