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
/// One pointer wide: a session with no links and the layer's settings costs
/// nothing here; otherwise the data is one shared allocation, so cloning a
/// record does not copy it.
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
pub struct Meta(Option<Arc<MetaData>>);

#[derive(Clone, Default, PartialEq, Eq)]
struct MetaData {
    /// Sorted by name, unique names.
    links: Vec<(Box<str>, Box<str>)>,
    idle_timeout: Option<Duration>,
    persistent_cookie: Option<bool>,
}

impl MetaData {
    fn is_empty(&self) -> bool {
        self.links.is_empty() && self.idle_timeout.is_none() && self.persistent_cookie.is_none()
    }
}

impl Meta {
    /// No links, the layer's settings.
    pub fn new() -> Self {
        Self(None)
    }

    /// Whether there are no links and no settings of the session's own.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The links, sorted by name.
    pub fn links(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0
            .as_deref()
            .map_or(&[][..], |d| &d.links[..])
            .iter()
            .map(|(n, v)| (&**n, &**v))
    }

    /// The value linked under `name`.
    pub fn link(&self, name: &str) -> Option<&str> {
        self.links().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The session's own idle timeout; `None`: the layer's.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.0.as_deref().and_then(|d| d.idle_timeout)
    }

    /// The session's own cookie persistence; `None`: the layer's.
    pub fn persistent_cookie(&self) -> Option<bool> {
        self.0.as_deref().and_then(|d| d.persistent_cookie)
    }

    fn edit(&mut self, f: impl FnOnce(&mut MetaData)) {
        let data = self.0.get_or_insert_with(Default::default);
        f(Arc::make_mut(data));
        if data.is_empty() {
            self.0 = None;
        }
    }

    /// Links the session as `name = value`, replacing its value for `name`.
    /// For stores rebuilding a record; a handler uses
    /// [`SessionStorage::link`](crate::SessionStorage::link), which checks
    /// the name, the value and the count.
    pub fn set_link(&mut self, name: &str, value: &str) {
        self.edit(
            |d| match d.links.binary_search_by(|(n, _)| (**n).cmp(name)) {
                Ok(i) => d.links[i].1 = value.into(),
                Err(i) => d.links.insert(i, (name.into(), value.into())),
            },
        );
    }

    /// Removes the link named `name`, if any.
    pub fn remove_link(&mut self, name: &str) {
        if self.link(name).is_some() {
            self.edit(|d| d.links.retain(|(n, _)| &**n != name));
        }
    }

    /// Sets (or, with `None`, drops) the session's own idle timeout.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        if self.idle_timeout() != timeout {
            self.edit(|d| d.idle_timeout = timeout);
        }
    }

    /// Sets (or, with `None`, drops) the session's own cookie persistence.
    pub fn set_persistent_cookie(&mut self, persistent: Option<bool>) {
        if self.persistent_cookie() != persistent {
            self.edit(|d| d.persistent_cookie = persistent);
        }
    }

    /// Applies the link and lifetime changes of `changes` (its item changes
    /// are for [`Items::apply`](super::Items::apply)).
    pub fn apply(&mut self, changes: &ChangeSet) {
        for (name, value) in changes.links() {
            match value {
                Some(v) => self.set_link(name, v),
                None => self.remove_link(name),
            }
        }
        if let Some(t) = changes.idle_timeout() {
            self.set_idle_timeout(Some(t));
        }
        if let Some(p) = changes.persistent_cookie() {
            self.set_persistent_cookie(Some(p));
        }
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
        m.remove_link("user");
        m.remove_link("sid");
        assert!(m.is_empty(), "back to one null pointer");
        assert_eq!(std::mem::size_of::<Meta>(), 8);
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
