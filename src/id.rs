//! Session ids: server-made UUID v4 values with one strict text form.

use std::fmt;
use std::str::FromStr;

/// The id of one session: a random UUID v4 (122 random bits) made by the server.
///
/// Its only text form is the lowercase hyphenated UUID
/// (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`); [`SessionId::from_str`]
/// accepts nothing else, so every id has exactly one spelling and a malformed
/// cookie is refused before any store is asked.
///
/// `Display` writes the whole id (stores need it to build keys); `Debug`
/// prints only its first four characters, so ids do not leak into logs.
///
/// # Example
///
/// ```
/// use tower_session_storage::SessionId;
///
/// let id: SessionId = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1".parse().unwrap();
/// assert_eq!(id.to_string(), "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1");
/// assert_eq!(format!("{id:?}"), "SessionId(0b1e…)");
/// // Upper case, braces, a missing hyphen or another UUID version: refused.
/// assert!("0B1ED8B0-5BD4-4B5C-9D2C-6F2B0FD2C9A1".parse::<SessionId>().is_err());
/// assert!("0b1ed8b0-5bd4-1b5c-9d2c-6f2b0fd2c9a1".parse::<SessionId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u128);

/// The value of each lowercase hex digit; `0xff` for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Where the 32 hex digits of the text form are, in two halves of 16.
const DIGITS: [[usize; 16]; 2] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17],
    [
        19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
    ],
];

/// Length of the text form of a [`SessionId`].
pub(crate) const ID_LEN: usize = 36;

impl SessionId {
    /// A placeholder that no request can carry (not a version 4 UUID).
    pub(crate) const NIL: SessionId = SessionId(0);

    /// A fresh random id from the operating system's CSPRNG-seeded generator.
    pub(crate) fn generate() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }

    /// Parses the strict text form from raw bytes (as found in a header).
    ///
    /// Checks the length first, so a long value costs O(1).
    pub(crate) fn parse_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; ID_LEN] = b.try_into().ok()?;
        if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        // Version 4 and RFC 4122 variant: the ids this crate makes, nothing else.
        if b[14] != b'4' || !matches!(b[19], b'8' | b'9' | b'a' | b'b') {
            return None;
        }
        // The 32 digits as two halves of 16, each into a `u64`: a table
        // look-up per digit and one check at the end, no branch per byte.
        let mut bad = 0u8;
        let mut half = |places: &[usize; 16]| {
            let mut n = 0u64;
            for &i in places {
                let v = HEX[usize::from(b[i])];
                bad |= v;
                n = (n << 4) | u64::from(v & 0x0f);
            }
            n
        };
        let (hi, lo) = (half(&DIGITS[0]), half(&DIGITS[1]));
        if bad & 0xf0 != 0 {
            return None;
        }
        Some(Self((u128::from(hi) << 64) | u128::from(lo)))
    }

    /// Writes the text form into a stack buffer (no allocation).
    pub(crate) fn encode(&self) -> EncodedId {
        let mut buf = [0u8; ID_LEN];
        uuid::Uuid::from_u128(self.0)
            .hyphenated()
            .encode_lower(&mut buf);
        EncodedId(buf)
    }
}

/// The text form of an id on the stack.
#[derive(Clone, Copy)]
pub(crate) struct EncodedId([u8; ID_LEN]);

impl EncodedId {
    pub(crate) fn as_str(&self) -> &str {
        // The buffer holds only ASCII hex digits and hyphens.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.encode();
        write!(f, "SessionId({}…)", &e.as_str()[..4])
    }
}

/// The error of parsing a [`SessionId`]: the text is not the strict form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseSessionIdError;

impl fmt::Display for ParseSessionIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a session id: expected a lowercase hyphenated UUID v4")
    }
}

impl std::error::Error for ParseSessionIdError {}

impl FromStr for SessionId {
    type Err = ParseSessionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_bytes(s.as_bytes()).ok_or(ParseSessionIdError)
    }
}

/// The public name of a session: shows it in a list or a URL, never acts as it.
///
/// A session keeps one `PublicId` for its whole life, across
/// [`cycle_id`](crate::SessionStorage::cycle_id): it is what the store uses to
/// find a session that was moved to a new id (so a logout racing a
/// `cycle_id` still ends it), and what a "your devices" page can show.
/// It is random (122 bits, made independently of the [`SessionId`]), so it
/// tells nothing about the bearer id, and its text form (32 lowercase hex
/// digits, no hyphens) is not a [`SessionId`]: a `PublicId` put in a cookie or
/// a header is refused before any store look-up.
///
/// # Example
///
/// ```
/// use tower_session_storage::PublicId;
///
/// let p = PublicId::generate();
/// let text = p.to_string();
/// assert_eq!(text.len(), 32);
/// assert_eq!(text.parse::<PublicId>(), Ok(p));
/// assert!(text.parse::<tower_session_storage::SessionId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId(u128);

impl PublicId {
    /// A fresh random public id. The layer makes one for every new session;
    /// stores only keep and compare them.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().as_u128())
    }
}

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicId({self})")
    }
}

/// The error of parsing a [`PublicId`]: not 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParsePublicIdError;

impl fmt::Display for ParsePublicIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a public session id: expected 32 lowercase hex digits")
    }
}

impl std::error::Error for ParsePublicIdError {}

impl FromStr for PublicId {
    type Err = ParsePublicIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(ParsePublicIdError);
        }
        let mut n: u128 = 0;
        for &c in b {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                _ => return Err(ParsePublicIdError),
            };
            n = (n << 4) | u128::from(v);
        }
        Ok(Self(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_through_their_text_form() {
        for _ in 0..1000 {
            let id = SessionId::generate();
            let text = id.to_string();
            assert_eq!(text.len(), ID_LEN);
            assert_eq!(text.parse::<SessionId>(), Ok(id));
        }
    }

    #[test]
    fn generated_ids_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
    }

    #[test]
    fn rejects_everything_but_the_strict_form() {
        let good = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";
        assert!(SessionId::parse_bytes(good.as_bytes()).is_some());
        for bad in [
            "",
            "0b1ed8b05bd44b5c9d2c6f2b0fd2c9a1",
            "{0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1}",
            "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a",
            "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1 ",
            "0B1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1",
            "0b1ed8b0-5bd4-4b5c-7d2c-6f2b0fd2c9a1",
            "0b1ed8b0-5bd4-3b5c-9d2c-6f2b0fd2c9a1",
            "0b1ed8b0+5bd4-4b5c-9d2c-6f2b0fd2c9a1",
            "0g1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1",
            "\"b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a\"",
        ] {
            assert!(SessionId::parse_bytes(bad.as_bytes()).is_none(), "{bad}");
        }
        let mut utf8 = good.as_bytes().to_vec();
        utf8[0] = 0xff;
        assert!(SessionId::parse_bytes(&utf8).is_none());
    }

    #[test]
    fn a_wrong_byte_in_any_digit_place_is_refused() {
        let good = *b"0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";
        for i in (0..ID_LEN).filter(|i| ![8, 13, 18, 23].contains(i)) {
            for bad in [
                b'A', b'F', b'G', b'g', b'/', b':', b'`', b'-', b' ', 0, 0x80, 0xff,
            ] {
                let mut text = good;
                text[i] = bad;
                assert!(SessionId::parse_bytes(&text).is_none(), "{i}: {bad}");
            }
        }
        let id = SessionId::parse_bytes(&good).unwrap();
        assert_eq!(id.0, 0x0b1e_d8b0_5bd4_4b5c_9d2c_6f2b_0fd2_c9a1);
    }

    #[test]
    fn public_ids_round_trip_and_are_never_session_ids() {
        for _ in 0..100 {
            let p = PublicId::generate();
            let text = p.to_string();
            assert_eq!(text.parse::<PublicId>(), Ok(p));
            assert!(SessionId::parse_bytes(text.as_bytes()).is_none());
        }
        for bad in [
            "",
            "0B1ED8B05BD44B5C9D2C6F2B0FD2C9A1",
            "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1",
            "zz1ed8b05bd44b5c9d2c6f2b0fd2c9a1",
        ] {
            assert!(bad.parse::<PublicId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_shows_only_a_prefix() {
        let id = SessionId::generate();
        let full = id.to_string();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&full));
        assert!(dbg.contains(&full[..4]));
    }
}
