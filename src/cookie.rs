//! Strict id extraction from `Cookie` headers, and `Set-Cookie` building.
//!
//! # Parsing rules
//!
//! - Every `Cookie` header field is read, in order (HTTP/2 sends one field per
//!   cookie).
//! - Pairs are split on `;`; spaces and tabs around names and values are
//!   ignored, so `;;`, a trailing `;` and extra whitespace are harmless.
//! - A pair without `=` or with an empty name is skipped; it never matches.
//! - Names match exactly and case-sensitively, byte for byte: `ID`, `%69d` or
//!   `__HOST-id` are other cookies. Nothing is percent-decoded or unquoted.
//! - A value is taken only if it is the strict id form (36 bytes, checked by
//!   length first); anything else (empty, quoted, long, non-ASCII) is skipped.
//! - **Duplicates:** the first pair that has our name *and* a well-formed id
//!   wins; later ones are ignored. Browsers send the cookie with the longest
//!   path first, so this is the most specific one. Never "last wins".
//! - The scan works on bytes (non-UTF-8 bytes elsewhere in the header do not
//!   matter), is linear, stops at the first hit and allocates nothing.

use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};

use crate::id::SessionId;

/// The `SameSite` attribute of the session cookie.
///
/// # Example
///
/// ```
/// use tower_session_storage::{MemoryStore, SameSite, SessionLayer};
///
/// let layer = SessionLayer::new(MemoryStore::new()).with_same_site(SameSite::Strict);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on cross-site top-level navigations (GET), e.g. an OpenID
    /// Connect callback. The default.
    Lax,
    /// Sent on every request; requires `Secure`.
    None,
}

/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis); so do we.
pub(crate) const MAX_COOKIE_AGE: Duration = Duration::from_secs(400 * 24 * 3600);

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The first well-formed session id under `name` in the request's cookies.
pub(crate) fn find_id(headers: &HeaderMap, name: &[u8]) -> Option<SessionId> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|field| find_in_field(field.as_bytes(), name))
}

/// The first well-formed session id in the request headers named `name`
/// (header transport); surrounding spaces and tabs are ignored.
pub(crate) fn find_in_header(headers: &HeaderMap, name: &http::HeaderName) -> Option<SessionId> {
    headers
        .get_all(name)
        .iter()
        .find_map(|v| SessionId::parse_bytes(trim(v.as_bytes())))
}

/// Whether the request carries a cookie `name` at all, whatever its value.
/// (A bare token without `=` is a nameless cookie, never ours.)
pub(crate) fn has_cookie(headers: &HeaderMap, name: &[u8]) -> bool {
    headers.get_all(COOKIE).iter().any(|field| {
        field.as_bytes().split(|&b| b == b';').any(|pair| {
            pair.iter()
                .position(|&b| b == b'=')
                .is_some_and(|eq| trim(&pair[..eq]) == name)
        })
    })
}

/// The first well-formed session id under `name` in one `Cookie` field.
pub(crate) fn find_in_field(field: &[u8], name: &[u8]) -> Option<SessionId> {
    field.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        if n.is_empty() || n != name {
            return None;
        }
        SessionId::parse_bytes(v)
    })
}

/// Whether a `Set-Cookie` value sets the cookie `name`.
fn sets_cookie(value: &HeaderValue, name: &[u8]) -> bool {
    let v = value.as_bytes();
    let end = v.iter().position(|&b| b == b'=' || b == b';');
    end.is_some_and(|e| v[e] == b'=' && trim(&v[..e]) == name)
}

/// Whether the response sets the cookie `name`.
pub(crate) fn response_sets(headers: &HeaderMap, name: &[u8]) -> bool {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| sets_cookie(v, name))
}

/// Removes every `Set-Cookie` for `name` the inner service produced: the
/// layer owns its cookie. Returns how many were removed.
pub(crate) fn strip_set_cookie(headers: &mut HeaderMap, name: &[u8]) -> usize {
    if !headers
        .get_all(SET_COOKIE)
        .iter()
        .any(|v| sets_cookie(v, name))
    {
        return 0;
    }
    let all: Vec<HeaderValue> = match headers.entry(SET_COOKIE) {
        http::header::Entry::Occupied(e) => e.remove_entry_mult().1.collect(),
        http::header::Entry::Vacant(_) => return 0,
    };
    let before = all.len();
    let mut kept = 0;
    for v in all {
        if !sets_cookie(&v, name) {
            headers.append(SET_COOKIE, v);
            kept += 1;
        }
    }
    before - kept
}

/// What the cookie attributes are, from the layer's config.
#[derive(Debug, Clone)]
pub(crate) struct CookieConfig {
    pub(crate) name: Box<str>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) path: Box<str>,
    pub(crate) domain: Option<Box<str>>,
    /// The attributes of a browser-session cookie (`; HttpOnly; …`),
    /// rendered by the `cookie` crate once, by [`render`](Self::render), when
    /// the layer is applied.
    pub(crate) suffix: Box<str>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        let mut c = Self {
            name: "id".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
            suffix: Box::default(),
        };
        c.render();
        c
    }
}

impl CookieConfig {
    /// Renders the attributes every browser-session cookie repeats.
    pub(crate) fn render(&mut self) {
        let full = self.base("").build().to_string();
        self.suffix = full.get(self.name.len() + 1..).unwrap_or_default().into();
    }

    fn base<'a>(&'a self, value: &'a str) -> cookie::CookieBuilder<'a> {
        let mut c = cookie::Cookie::build((&*self.name, value))
            .path(&*self.path)
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(match self.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        if let Some(d) = &self.domain {
            c = c.domain(&**d);
        }
        c
    }

    /// `Set-Cookie` carrying `id`; with `max_age`, a persistent cookie
    /// (clamped to 400 days), without it a browser-session cookie.
    pub(crate) fn set(&self, id: &SessionId, max_age: Option<Duration>) -> Option<HeaderValue> {
        let enc = id.encode();
        if max_age.is_none() {
            // The common case: the attributes never change, so they are
            // rendered once (`render`) and only the name and id are added
            // per response.
            let suffix = &*self.suffix;
            let mut v =
                String::with_capacity(self.name.len() + 1 + enc.as_str().len() + suffix.len());
            v.push_str(&self.name);
            v.push('=');
            v.push_str(enc.as_str());
            v.push_str(suffix);
            let mut v = HeaderValue::try_from(v).ok()?;
            v.set_sensitive(true);
            return Some(v);
        }
        let mut c = self.base(enc.as_str());
        if let Some(age) = max_age {
            let secs = age.min(MAX_COOKIE_AGE).as_secs();
            c = c.max_age(cookie::time::Duration::seconds(secs as i64));
        }
        header(c)
    }

    /// `Set-Cookie` that deletes the cookie.
    pub(crate) fn expire(&self) -> Option<HeaderValue> {
        let c = self
            .base("")
            .max_age(cookie::time::Duration::ZERO)
            .expires(cookie::time::OffsetDateTime::UNIX_EPOCH);
        header(c)
    }

    /// Why this cookie configuration cannot work, naming the fix.
    pub(crate) fn problem(&self) -> Option<String> {
        let name = &*self.name;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Some(format!(
                "cookie name {name:?} is not a valid cookie name: use letters, digits and !#$%&'*+-.^_`|~ only (with_cookie_name)"
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Some(
                "SameSite=None requires Secure: call .with_secure(true) or choose SameSite::Lax"
                    .into(),
            );
        }
        // Browsers match the prefixes without regard to case (RFC 6265bis
        // 4.1.3): `__HOST-id` and `__secure-id` get the same rules.
        let has_prefix = |p: &str| {
            name.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        };
        if has_prefix("__Secure-") && !self.secure {
            return Some(format!(
                "a cookie named {name:?} requires Secure: call .with_secure(true) or drop the __Secure- prefix"
            ));
        }
        if has_prefix("__Host-") {
            if !self.secure {
                return Some(format!(
                    "a cookie named {name:?} requires Secure: call .with_secure(true) or drop the __Host- prefix"
                ));
            }
            if self.domain.is_some() {
                return Some(format!(
                    "a cookie named {name:?} must not have a Domain: remove .with_domain(..) or drop the __Host- prefix"
                ));
            }
            if &*self.path != "/" {
                return Some(format!(
                    "a cookie named {name:?} must have Path=/: call .with_path(\"/\") or drop the __Host- prefix"
                ));
            }
        }
        if !self.path.starts_with('/') || !self.path.bytes().all(is_attr_byte) {
            return Some(format!(
                "cookie path {:?} must start with '/' and hold no ';' or control characters (with_path)",
                self.path
            ));
        }
        if let Some(d) = &self.domain {
            if d.is_empty() || !d.bytes().all(is_attr_byte) || d.contains(' ') {
                return Some(format!(
                    "cookie domain {d:?} is not a host name (with_domain)"
                ));
            }
        }
        None
    }
}

fn header(c: cookie::CookieBuilder<'_>) -> Option<HeaderValue> {
    let mut v = HeaderValue::try_from(c.build().to_string()).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes allowed in a cookie attribute value (RFC 6265 `av-octet`).
fn is_attr_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b';'
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";
    const ID2: &str = "1c2fe9c1-6ce5-4c6d-8e3d-7a3c1ae3dab2";

    fn find(fields: &[&[u8]]) -> Option<String> {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(COOKIE, HeaderValue::from_bytes(f).unwrap());
        }
        find_id(&h, b"id").map(|i| i.to_string())
    }

    #[test]
    fn finds_the_id_among_other_cookies() {
        let c = format!("a=1; id={ID}; b=2");
        assert_eq!(find(&[c.as_bytes()]).as_deref(), Some(ID));
    }

    #[test]
    fn tolerates_whitespace_tabs_and_empty_pairs() {
        let c = format!(";; \t a=1 ;;  id = {ID}\t;;;");
        assert_eq!(find(&[c.as_bytes()]).as_deref(), Some(ID));
    }

    #[test]
    fn skips_nameless_and_bare_pairs() {
        let c = format!("={ID}; {ID}; x");
        assert_eq!(find(&[c.as_bytes()]), None);
    }

    #[test]
    fn first_well_formed_duplicate_wins() {
        let c = format!("id=; id=junk; id={ID}; id={ID2}");
        assert_eq!(find(&[c.as_bytes()]).as_deref(), Some(ID));
    }

    #[test]
    fn reads_every_cookie_field_in_order() {
        let a = format!("id={ID2}");
        let b = format!("id={ID}");
        assert_eq!(
            find(&[b"x=1", a.as_bytes(), b.as_bytes()]).as_deref(),
            Some(ID2)
        );
    }

    #[test]
    fn names_match_exactly() {
        for name in ["ID", "%69d", "Id", "i d", "id2", "xid"] {
            let c = format!("{name}={ID}");
            assert_eq!(find(&[c.as_bytes()]), None, "{name}");
        }
    }

    #[test]
    fn survives_non_utf8_elsewhere() {
        let mut c = b"a=\xff\xfe; ".to_vec();
        c.extend_from_slice(format!("id={ID}").as_bytes());
        assert_eq!(find(&[&c]).as_deref(), Some(ID));
    }

    #[test]
    fn quoted_values_are_not_unquoted() {
        let c = format!("id=\"{ID}\"");
        assert_eq!(find(&[c.as_bytes()]), None);
    }

    #[test]
    fn set_cookie_has_the_secure_defaults() {
        let cfg = CookieConfig::default();
        let id: SessionId = ID.parse().unwrap();
        let v = cfg.set(&id, None).unwrap();
        let s = v.to_str().unwrap();
        assert!(s.starts_with(&format!("id={ID}")), "{s}");
        for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
            assert!(s.contains(attr), "{s} lacks {attr}");
        }
        assert!(!s.contains("Max-Age") && !s.contains("Domain"), "{s}");
        assert!(v.is_sensitive());
    }

    #[test]
    fn the_cached_attributes_match_what_the_cookie_crate_renders() {
        let mut cfg = CookieConfig {
            name: "__Host-s".into(),
            same_site: SameSite::Strict,
            ..CookieConfig::default()
        };
        cfg.render();
        let id: SessionId = ID.parse().unwrap();
        for _ in 0..2 {
            let fast = cfg.set(&id, None).unwrap();
            let slow = cfg.base(&id.to_string()).build().to_string();
            assert_eq!(fast.to_str().unwrap(), slow);
            cfg.domain = Some("example.com".into());
            cfg.render();
        }
    }

    #[test]
    fn prefix_rules_apply_to_every_case_variant_of_the_prefix() {
        for name in ["__Host-id", "__HOST-id", "__host-id", "__hOsT-id"] {
            let with_domain = CookieConfig {
                name: name.into(),
                domain: Some("example.com".into()),
                ..CookieConfig::default()
            };
            let p = with_domain.problem();
            assert!(
                p.as_deref().is_some_and(|p| p.contains("Domain")),
                "{name}: {p:?}"
            );
            let not_secure = CookieConfig {
                name: name.into(),
                secure: false,
                ..CookieConfig::default()
            };
            assert!(not_secure.problem().is_some(), "{name} without Secure");
            let sub_path = CookieConfig {
                name: name.into(),
                path: "/app".into(),
                ..CookieConfig::default()
            };
            assert!(sub_path.problem().is_some(), "{name} with Path=/app");
        }
        for name in ["__Secure-id", "__secure-id", "__SECURE-id"] {
            let not_secure = CookieConfig {
                name: name.into(),
                secure: false,
                ..CookieConfig::default()
            };
            let p = not_secure.problem();
            assert!(
                p.as_deref().is_some_and(|p| p.contains("Secure")),
                "{name}: {p:?}"
            );
        }
        // Names that merely contain the words are not prefixed.
        for name in ["_Host-id", "x__Host-id", "__Hostid"] {
            let cfg = CookieConfig {
                name: name.into(),
                secure: false,
                domain: Some("example.com".into()),
                ..CookieConfig::default()
            };
            assert_eq!(cfg.problem(), None, "{name}");
        }
    }

    #[test]
    fn max_age_is_clamped_to_400_days() {
        let cfg = CookieConfig::default();
        let id: SessionId = ID.parse().unwrap();
        let v = cfg
            .set(&id, Some(Duration::from_secs(1000 * 24 * 3600)))
            .unwrap();
        assert!(v.to_str().unwrap().contains("Max-Age=34560000"), "{v:?}");
    }

    #[test]
    fn expire_deletes_the_cookie() {
        let v = CookieConfig::default().expire().unwrap();
        let s = v.to_str().unwrap();
        assert!(s.starts_with("id=;"), "{s}");
        assert!(s.contains("Max-Age=0"), "{s}");
        assert!(s.contains("1970"), "{s}");
    }

    #[test]
    fn strips_only_our_set_cookie() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
        h.append(SET_COOKIE, HeaderValue::from_static("id=forged; Path=/"));
        h.append(SET_COOKIE, HeaderValue::from_static("idx=1"));
        assert_eq!(strip_set_cookie(&mut h, b"id"), 1);
        let left: Vec<_> = h.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark", "idx=1"]);
    }
}
