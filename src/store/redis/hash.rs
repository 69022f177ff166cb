//! A session's Redis hash: its metadata fields and how a reply is read.

use std::time::Duration;

use redis::Value;

use crate::id::PublicId;
use crate::store::{Meta, Record, Timestamp};

/// The field holding the creation time. Starts with `0xFF`, which no UTF-8
/// string (so no item name) contains.
pub(super) const CREATED_FIELD: &[u8] = b"\xffcreated_at";
/// The field holding the expiry time; see [`CREATED_FIELD`].
pub(super) const EXPIRES_FIELD: &[u8] = b"\xffexpires_at";
/// The field holding the public id (32 lowercase hex digits); see
/// [`CREATED_FIELD`].
pub(super) const PUBLIC_FIELD: &[u8] = b"\xffpublic_id";

/// The field holding the session's links, encoded by [`encode_links`]
/// (absent when it has none); see [`CREATED_FIELD`].
pub(super) const LINKS_FIELD: &[u8] = b"\xffl";
/// The field holding the session's own idle timeout, in milliseconds.
pub(super) const IDLE_FIELD: &[u8] = b"\xffi";
/// The field holding the session's own cookie persistence, `1` or `0`.
pub(super) const PERSIST_FIELD: &[u8] = b"\xffp";
/// The field holding the horizon: the time (milliseconds) until which the
/// session's index keys and move pointer are known to live. Present while
/// the session has links.
pub(super) const HORIZON_FIELD: &[u8] = b"\xffh";

/// Separates a link's name from its value in [`LINKS_FIELD`] (ASCII unit
/// separator: a control character, which neither can hold).
const NAME_END: char = '\u{1f}';
/// Separates two links in [`LINKS_FIELD`] (ASCII record separator).
const LINK_END: char = '\u{1e}';

/// A session's links as one field value: `name US value RS name US value`,
/// sorted by name. Unambiguous: names and values hold no control
/// characters.
pub(super) fn encode_links(meta: &Meta) -> String {
    let mut s = String::new();
    for (i, (n, v)) in meta.links().enumerate() {
        if i > 0 {
            s.push(LINK_END);
        }
        s.push_str(n);
        s.push(NAME_END);
        s.push_str(v);
    }
    s
}

/// Reads [`LINKS_FIELD`] into `meta`; `None` when it is malformed.
pub(super) fn decode_links(b: &[u8], meta: &mut Meta) -> Option<()> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() {
        return Some(());
    }
    for link in s.split(LINK_END) {
        let (n, v) = link.split_once(NAME_END)?;
        if !crate::store::is_valid_link(n, v) {
            return None;
        }
        meta.set_link(n, v);
    }
    Some(())
}

/// A duration in whole milliseconds, clamped as times are ([`clamp`]).
pub(super) fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MILLIS)
}

/// Times are clamped to 2^53 - 1 ms (the year 285,000) so the scripts' Lua
/// numbers (doubles) hold them exactly.
const MAX_MILLIS: u64 = (1 << 53) - 1;

pub(super) fn clamp(t: Timestamp) -> u64 {
    t.as_millis().min(MAX_MILLIS)
}

/// A stored hash, read.
pub(super) enum Parsed {
    /// No such key (an empty hash).
    Absent,
    /// The session, and its [horizon](HORIZON_FIELD) (0 when none).
    Found(Record, u64),
    Corrupt(&'static str),
}

/// Reads a session from an `HGETALL` reply (RESP2 array or RESP3 map).
pub(super) fn parse_hash(v: Value) -> Parsed {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs,
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Parsed::Corrupt("odd number of hash fields");
            }
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        Value::Nil => return Parsed::Absent,
        _ => return Parsed::Corrupt("not a hash"),
    };
    if pairs.is_empty() {
        return Parsed::Absent;
    }
    let (mut created, mut expires, mut public) = (None, None, None);
    let (mut meta, mut horizon) = (Meta::new(), 0);
    let mut items: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            return Parsed::Corrupt("a hash field is not a string");
        };
        if k == CREATED_FIELD {
            created = parse_millis(&v);
        } else if k == EXPIRES_FIELD {
            expires = parse_millis(&v);
        } else if k == LINKS_FIELD {
            if decode_links(&v, &mut meta).is_none() {
                return Parsed::Corrupt("unreadable links");
            }
        } else if k == IDLE_FIELD {
            let Some(ms) = parse_millis(&v) else {
                return Parsed::Corrupt("unreadable idle timeout");
            };
            meta.set_idle_timeout(Some(Duration::from_millis(ms)));
        } else if k == PERSIST_FIELD {
            match &v[..] {
                b"1" => meta.set_persistent_cookie(Some(true)),
                b"0" => meta.set_persistent_cookie(Some(false)),
                _ => return Parsed::Corrupt("unreadable cookie persistence"),
            }
        } else if k == HORIZON_FIELD {
            horizon = parse_millis(&v).unwrap_or(0);
        } else if k == PUBLIC_FIELD {
            public = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<PublicId>().ok());
        } else {
            match (String::from_utf8(k), String::from_utf8(v)) {
                (Ok(k), Ok(v)) => items.push((k, v)),
                _ => return Parsed::Corrupt("an item is not UTF-8"),
            }
        }
    }
    let (Some(created_at), Some(expires_at), Some(public_id)) = (created, expires, public) else {
        return Parsed::Corrupt("missing or unreadable metadata");
    };
    // Sorted first, so building `Items` appends instead of shifting.
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Parsed::Found(
        Record {
            items: items.into_iter().collect(),
            created_at: Timestamp::from_millis(created_at),
            expires_at: Timestamp::from_millis(expires_at),
            public_id,
            meta,
        },
        horizon,
    )
}

/// Strict decimal milliseconds: 1 to 16 ASCII digits.
pub(super) fn parse_millis(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields_cannot_be_item_names() {
        for f in [
            CREATED_FIELD,
            EXPIRES_FIELD,
            PUBLIC_FIELD,
            LINKS_FIELD,
            IDLE_FIELD,
            PERSIST_FIELD,
            HORIZON_FIELD,
        ] {
            assert!(std::str::from_utf8(f).is_err());
        }
    }

    const PID: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn parse_reads_items_and_metadata_and_rejects_junk() {
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let reply = Value::Array(vec![
            bulk(b"b"),
            bulk(b"2"),
            bulk(CREATED_FIELD),
            bulk(b"1000"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
            bulk(b"a"),
            bulk(b"1"),
            bulk(EXPIRES_FIELD),
            bulk(b"61000"),
        ]);
        let Parsed::Found(r, _) = parse_hash(reply) else {
            panic!("a good hash")
        };
        assert_eq!(r.items.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(
            (r.created_at.as_millis(), r.expires_at.as_millis()),
            (1000, 61000)
        );
        assert_eq!(r.public_id.to_string().as_bytes(), PID);

        assert!(matches!(parse_hash(Value::Array(vec![])), Parsed::Absent));
        let no_meta = Value::Array(vec![bulk(b"a"), bulk(b"1")]);
        assert!(matches!(parse_hash(no_meta), Parsed::Corrupt(_)));
        let bad_meta = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1e3"),
            bulk(EXPIRES_FIELD),
            bulk(b"5"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
        ]);
        assert!(matches!(parse_hash(bad_meta), Parsed::Corrupt(_)));
        let not_utf8 = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1"),
            bulk(EXPIRES_FIELD),
            bulk(b"5"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
            bulk(b"k"),
            bulk(b"\xff"),
        ]);
        assert!(matches!(parse_hash(not_utf8), Parsed::Corrupt(_)));
        // Sessions stored before the public id was kept: corrupt.
        for pid in [
            None,
            Some(&b"0123"[..]),
            Some(&b"0123456789ABCDEF0123456789abcdef"[..]),
        ] {
            let mut fields = vec![
                bulk(CREATED_FIELD),
                bulk(b"1"),
                bulk(EXPIRES_FIELD),
                bulk(b"5"),
            ];
            if let Some(p) = pid {
                fields.extend([bulk(PUBLIC_FIELD), bulk(p)]);
            }
            assert!(
                matches!(parse_hash(Value::Array(fields)), Parsed::Corrupt(_)),
                "{pid:?}"
            );
        }
    }

    #[test]
    fn links_round_trip_and_junk_is_refused() {
        let mut meta = Meta::new();
        meta.set_link("user", "a{b}:c");
        meta.set_link("sid", "s 1");
        let encoded = encode_links(&meta);
        assert_eq!(encoded, "sid\u{1f}s 1\u{1e}user\u{1f}a{b}:c");
        let mut back = Meta::new();
        assert!(decode_links(encoded.as_bytes(), &mut back).is_some());
        assert_eq!(back, meta);
        for bad in [&b"user"[..], b"us:er\x1fv", b"user\x1f", b"\xff\x1fv"] {
            assert!(decode_links(bad, &mut Meta::new()).is_none(), "{bad:?}");
        }
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let reply = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1"),
            bulk(EXPIRES_FIELD),
            bulk(b"5"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
            bulk(LINKS_FIELD),
            bulk(encoded.as_bytes()),
            bulk(IDLE_FIELD),
            bulk(b"60000"),
            bulk(PERSIST_FIELD),
            bulk(b"1"),
            bulk(HORIZON_FIELD),
            bulk(b"9"),
            bulk(b"k"),
            bulk(b"v"),
        ]);
        let Parsed::Found(r, horizon) = parse_hash(reply) else {
            panic!("a good hash")
        };
        assert_eq!(horizon, 9);
        assert_eq!(r.items.len(), 1);
        assert_eq!(r.meta.link("user"), Some("a{b}:c"));
        assert_eq!(r.meta.idle_timeout(), Some(Duration::from_secs(60)));
        assert_eq!(r.meta.persistent_cookie(), Some(true));
    }

    #[test]
    fn millis_are_strict_decimal() {
        assert_eq!(parse_millis(b"0"), Some(0));
        assert_eq!(parse_millis(b"1700000000000"), Some(1_700_000_000_000));
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1.0", b"12345678901234567"] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }
}
