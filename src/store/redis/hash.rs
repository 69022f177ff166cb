//! A session's Redis hash: its metadata fields and how a reply is read.

use std::time::Duration;

use redis::Value;

use crate::id::PublicId;
use crate::store::{Meta, Record, Timestamp};

/// The field holding the creation time (decimal milliseconds since the
/// Unix epoch). Starts with `0xFF`, which no UTF-8 string (so no item
/// name) contains. Names are two bytes: a listpack stores each field name
/// in every session, so a long name costs memory per session.
pub(super) const CREATED_FIELD: &[u8] = b"\xffc";
/// The field holding the public id (32 lowercase hex digits); see
/// [`CREATED_FIELD`].
pub(super) const PUBLIC_FIELD: &[u8] = b"\xffu";

/// The creation time in the layout before 0.2 (which also kept the expiry
/// in `\xffexpires_at`; the key's TTL carries it now). Still read, and
/// rewritten to [`CREATED_FIELD`] by the session's next write.
pub(super) const OLD_CREATED_FIELD: &[u8] = b"\xffcreated_at";
/// The expiry in the old layout: ignored when read (the TTL is the same
/// time), deleted by the next write.
pub(super) const OLD_EXPIRES_FIELD: &[u8] = b"\xffexpires_at";
/// The public id in the old layout; see [`OLD_CREATED_FIELD`].
pub(super) const OLD_PUBLIC_FIELD: &[u8] = b"\xffpublic_id";

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

/// Reads a session from an `HGETALL` reply (RESP2 array or RESP3 map) and
/// the key's `PEXPIRETIME` (`-2`: no key, `-1`: no TTL), taken right after.
///
/// Reads both layouts: the current one ([`CREATED_FIELD`],
/// [`PUBLIC_FIELD`]) and the one before ([`OLD_CREATED_FIELD`],
/// [`OLD_PUBLIC_FIELD`]; its expiry field is ignored, the TTL holds the
/// same time). Other fields starting with `0xFF` are ignored: a later
/// version may add some. A key without a TTL is corrupt (every session
/// key has one); one gone before its TTL was read is absent.
pub(super) fn parse_hash(v: Value, expiry: i64) -> Parsed {
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
    if pairs.is_empty() || expiry == -2 {
        return Parsed::Absent;
    }
    let Ok(expires_at) = u64::try_from(expiry) else {
        return Parsed::Corrupt("the key has no TTL");
    };
    let (mut created, mut public) = (None, None);
    let (mut meta, mut horizon) = (Meta::new(), 0);
    let mut items: Vec<(String, String)> = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            return Parsed::Corrupt("a hash field is not a string");
        };
        if k.first() != Some(&0xff) {
            match (String::from_utf8(k), String::from_utf8(v)) {
                (Ok(k), Ok(v)) => items.push((k, v)),
                _ => return Parsed::Corrupt("an item is not UTF-8"),
            }
        } else if k == CREATED_FIELD || (k == OLD_CREATED_FIELD && created.is_none()) {
            created = Some(parse_millis(&v));
        } else if k == PUBLIC_FIELD || (k == OLD_PUBLIC_FIELD && public.is_none()) {
            public = Some(
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<PublicId>().ok()),
            );
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
        } else if k == OLD_EXPIRES_FIELD {
            // The old layout's copy of the TTL: the TTL is read instead.
        }
        // Any other 0xFF field (the old expiry, or one a later version
        // adds) is not an item: ignored.
    }
    let (Some(Some(created_at)), Some(Some(public_id))) = (created, public) else {
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
            PUBLIC_FIELD,
            OLD_CREATED_FIELD,
            OLD_EXPIRES_FIELD,
            OLD_PUBLIC_FIELD,
            LINKS_FIELD,
            IDLE_FIELD,
            PERSIST_FIELD,
            HORIZON_FIELD,
        ] {
            assert!(std::str::from_utf8(f).is_err());
        }
    }

    const PID: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn bulk(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    #[test]
    fn parse_reads_items_and_metadata_and_rejects_junk() {
        let reply = Value::Array(vec![
            bulk(b"b"),
            bulk(b"2"),
            bulk(CREATED_FIELD),
            bulk(b"1000"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
            bulk(b"a"),
            bulk(b"1"),
        ]);
        let Parsed::Found(r, _) = parse_hash(reply, 61000) else {
            panic!("a good hash")
        };
        assert_eq!(r.items.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "2")]);
        assert_eq!(
            (r.created_at.as_millis(), r.expires_at.as_millis()),
            (1000, 61000)
        );
        assert_eq!(r.public_id.to_string().as_bytes(), PID);

        assert!(matches!(
            parse_hash(Value::Array(vec![]), -2),
            Parsed::Absent
        ));
        let no_meta = Value::Array(vec![bulk(b"a"), bulk(b"1")]);
        assert!(matches!(parse_hash(no_meta, 5), Parsed::Corrupt(_)));
        let bad_meta = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1e3"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
        ]);
        assert!(matches!(parse_hash(bad_meta, 5), Parsed::Corrupt(_)));
        let not_utf8 = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1"),
            bulk(PUBLIC_FIELD),
            bulk(PID),
            bulk(b"k"),
            bulk(b"\xff"),
        ]);
        assert!(matches!(parse_hash(not_utf8, 5), Parsed::Corrupt(_)));
        // Sessions stored before the public id was kept: corrupt.
        for pid in [
            None,
            Some(&b"0123"[..]),
            Some(&b"0123456789ABCDEF0123456789abcdef"[..]),
        ] {
            let mut fields = vec![bulk(CREATED_FIELD), bulk(b"1")];
            if let Some(p) = pid {
                fields.extend([bulk(PUBLIC_FIELD), bulk(p)]);
            }
            assert!(
                matches!(parse_hash(Value::Array(fields), 5), Parsed::Corrupt(_)),
                "{pid:?}"
            );
        }
    }

    #[test]
    fn the_ttl_is_the_expiry_and_a_key_without_one_is_corrupt() {
        let good = || {
            Value::Array(vec![
                bulk(CREATED_FIELD),
                bulk(b"1"),
                bulk(PUBLIC_FIELD),
                bulk(PID),
                bulk(b"a"),
                bulk(b"1"),
            ])
        };
        assert!(matches!(parse_hash(good(), -1), Parsed::Corrupt(_)));
        // Gone between HGETALL and PEXPIRETIME: absent, not corrupt.
        assert!(matches!(parse_hash(good(), -2), Parsed::Absent));
        let Parsed::Found(r, _) = parse_hash(good(), 77) else {
            panic!("a good hash")
        };
        assert_eq!(r.expires_at.as_millis(), 77);
    }

    #[test]
    fn the_old_layout_is_read_and_unknown_metadata_ignored() {
        let old = Value::Array(vec![
            bulk(OLD_CREATED_FIELD),
            bulk(b"1000"),
            bulk(OLD_EXPIRES_FIELD),
            bulk(b"1"),
            bulk(OLD_PUBLIC_FIELD),
            bulk(PID),
            bulk(b"\xffsomething-new"),
            bulk(b"\xfe\xfd"),
            bulk(b"a"),
            bulk(b"1"),
        ]);
        let Parsed::Found(r, _) = parse_hash(old, 61000) else {
            panic!("an old-layout hash")
        };
        assert_eq!(r.items.iter().collect::<Vec<_>>(), [("a", "1")]);
        // The expiry is the TTL's, not the old field's.
        assert_eq!(
            (r.created_at.as_millis(), r.expires_at.as_millis()),
            (1000, 61000)
        );
        assert_eq!(r.public_id.to_string().as_bytes(), PID);
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
        let reply = Value::Array(vec![
            bulk(CREATED_FIELD),
            bulk(b"1"),
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
        let Parsed::Found(r, horizon) = parse_hash(reply, 5) else {
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
