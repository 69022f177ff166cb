//! Item text as the SQL stores keep it.
//!
//! A NUL character cannot be stored in PostgreSQL at all (`text` and
//! `jsonb` refuse `\u0000`), and SQLite's JSON functions drop an object key
//! that holds one. Items may hold any text (the memory and Redis stores
//! keep NUL as it is), so the SQL stores escape it: `\0` is kept as
//! `U+FFFF` followed by `0`, and `U+FFFF` itself (a noncharacter, never
//! meant for interchange) as `U+FFFF` followed by `F`. Keys and values are
//! escaped on the way in and unescaped on the way out; text without either
//! character is kept as it is, without a copy.

use std::borrow::Cow;

const MARK: char = '\u{FFFF}';

/// `s` as stored.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['\0', MARK]) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\0' => {
                out.push(MARK);
                out.push('0');
            }
            MARK => {
                out.push(MARK);
                out.push('F');
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Stored text back as it was written. A mark followed by anything else
/// (not written by this crate) is kept as it is.
pub(crate) fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains(MARK) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == MARK {
            match chars.peek() {
                Some('0') => {
                    chars.next();
                    out.push('\0');
                    continue;
                }
                Some('F') => {
                    chars.next();
                    out.push(MARK);
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_the_mark_round_trip_and_plain_text_is_not_copied() {
        for s in [
            "",
            "plain",
            "a\0b",
            "\0",
            "\u{FFFF}",
            "\u{FFFF}0",
            "x\u{FFFF}F\0y",
            "\u{FFFF}\0\u{FFFF}",
        ] {
            let stored = escape(s);
            assert!(!stored.contains('\0'), "{s:?}");
            assert_eq!(unescape(&stored), s, "{s:?}");
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert!(matches!(unescape("plain"), Cow::Borrowed(_)));
    }
}
