//! Property tests of `Cookie` parsing, through the public API only.
//!
//! A [`SessionLayer`] over a [`MemoryStore`] wraps a handler that answers with
//! the id of the session it was given (empty when the session is fresh). One
//! real session is created first; then generated `Cookie` header fields are
//! sent and the handler's answer is compared with what the documented rules
//! say (see `src/cookie.rs`): every field read in order, pairs split on `;`,
//! spaces and tabs trimmed, exact byte-for-byte name match, only the strict id
//! form accepted, the first well-formed `id` pair wins.
//!
//! Set `PROPTEST_CASES` to run more cases than the default 256.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;

use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, TestCaseResult, TestRunner};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage};

type Svc = BoxCloneService<Request<String>, Response<String>, Infallible>;

/// A well-formed UUID v4 the server never issued.
const MADE_UP: &str = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";

/// Answers with the session's id; writes an item when asked (`x-write`).
async fn handler(req: Request<String>) -> Result<Response<String>, Infallible> {
    let session = req.extensions().get::<SessionStorage>().unwrap();
    if req.headers().contains_key("x-write") {
        session.set_item("k", "v").unwrap();
    }
    let id = session.id().map(|id| id.to_string()).unwrap_or_default();
    Ok(Response::new(id))
}

/// A runtime, the service, and the id of one real session in its store.
struct Fixture {
    rt: tokio::runtime::Runtime,
    svc: Svc,
    real: String,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let svc = BoxCloneService::new(
            ServiceBuilder::new()
                .layer(SessionLayer::new(MemoryStore::new()))
                .service_fn(handler),
        );
        let req = Request::builder()
            .header("x-write", "1")
            .body(String::new())
            .unwrap();
        let res = rt.block_on(svc.clone().oneshot(req)).unwrap();
        let set = res.headers()[SET_COOKIE].to_str().unwrap();
        let real = set
            .strip_prefix("id=")
            .and_then(|s| s.split(';').next())
            .unwrap()
            .to_owned();
        let fx = Self { rt, svc, real };
        let alone = format!("id={}", fx.real).into_bytes();
        assert_eq!(
            fx.seen(&[alone]),
            Some(fx.real.clone()),
            "the real id alone"
        );
        fx
    }

    /// Whether a pair in `fields` is named `id` (spaces and tabs around the
    /// name aside) and none of those pairs holds a well-formed id: the case
    /// where the layer clears our cookie.
    fn carries_a_malformed_cookie_of_ours(fields: &[Vec<u8>]) -> bool {
        let trim = |b: &[u8]| -> Vec<u8> {
            let start = b.iter().position(|&c| c != b' ' && c != b'\t');
            let end = b.iter().rposition(|&c| c != b' ' && c != b'\t');
            match (start, end) {
                (Some(s), Some(e)) => b[s..=e].to_vec(),
                _ => Vec::new(),
            }
        };
        let ours: Vec<Vec<u8>> = fields
            .iter()
            .flat_map(|f| f.split(|&b| b == b';'))
            .filter_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=')?;
                (trim(&pair[..eq]) == b"id").then(|| trim(&pair[eq + 1..]))
            })
            .collect();
        !ours.is_empty()
            && !ours.iter().any(|v| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<tower_session_storage::SessionId>().ok())
                    .is_some()
            })
    }

    /// Sends `fields` as `Cookie` header fields, in order; returns the id of
    /// the session the handler saw. Every accepted field is sent.
    fn seen(&self, fields: &[Vec<u8>]) -> Option<String> {
        let mut req = Request::new(String::new());
        for f in fields {
            req.headers_mut()
                .append(COOKIE, HeaderValue::from_bytes(f).unwrap());
        }
        let res = self.rt.block_on(self.svc.clone().oneshot(req)).unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // The handler wrote nothing: no Set-Cookie, except the removal of a
        // cookie of ours that is not a well-formed id.
        let removal = res.headers().get(SET_COOKIE).map(|v| {
            let v = v.to_str().unwrap();
            assert!(
                v.starts_with("id=;") && v.contains("Max-Age=0"),
                "only a removal may be sent: {v}"
            );
        });
        let body = res.into_body();
        let seen = (!body.is_empty()).then_some(body);
        assert_eq!(
            removal.is_some(),
            Self::carries_a_malformed_cookie_of_ours(fields),
            "a removal exactly when our cookie is there and holds no well-formed id"
        );
        seen
    }

    /// What the documented rules say the handler sees for `fields`.
    fn expected(&self, fields: &[Vec<u8>]) -> Option<String> {
        first_well_formed(fields, b"id")
            .filter(|v| *v == self.real.as_bytes())
            .map(|_| self.real.clone())
    }
}

// ---------------------------------------------------------------------------
// The reference: the documented parsing rules, written plainly.

fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The strict id form: lowercase hyphenated UUID, version 4, RFC 4122 variant.
fn is_strict_id(v: &[u8]) -> bool {
    v.len() == 36
        && v.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
        && v[14] == b'4'
        && matches!(v[19], b'8' | b'9' | b'a' | b'b')
}

/// Name and value of one pair, trimmed; `None` without `=`.
fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
}

/// Whether one pair is `name=<well-formed id>`.
fn is_id_pair(pair: &[u8], name: &[u8]) -> bool {
    split_pair(pair).is_some_and(|(n, v)| n == name && is_strict_id(v))
}

/// The first well-formed id under `name`, across fields in order.
fn first_well_formed<'a>(fields: &'a [Vec<u8>], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .flat_map(|f| f.split(|&b| b == b';'))
        .find(|p| is_id_pair(p, name))
        .and_then(split_pair)
        .map(|(_, v)| v)
}

// ---------------------------------------------------------------------------
// Generators.

/// `Cookie` header fields, printed readably when a case fails.
#[derive(Clone)]
struct Fields(Vec<Vec<u8>>);

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|v| v.escape_ascii().to_string()))
            .finish()
    }
}

/// A byte `HeaderValue` accepts (anything but controls other than tab).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => 0x20u8..0x7f,
        2 => 0x80u8..=0xff,
        1 => Just(b'\t'),
        2 => select(b";= \"%\\,".to_vec()),
    ]
}

/// A byte that may appear inside one pair: a header byte, but no `;`.
fn pair_byte() -> impl Strategy<Value = u8> {
    header_byte().prop_filter("no ';' inside a pair", |b| *b != b';')
}

fn pair_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(pair_byte(), 0..max)
}

/// Optional whitespace: spaces and tabs.
fn ows() -> impl Strategy<Value = Vec<u8>> {
    vec(select(b" \t".to_vec()), 0..3)
}

/// A separator between two pairs of one field: at least one `;`, with
/// spaces, tabs and extra `;` around it.
fn sep() -> impl Strategy<Value = Vec<u8>> {
    (ows(), vec(select(b" \t;".to_vec()), 0..4)).prop_map(|(mut a, b)| {
        a.push(b';');
        a.extend(b);
        a
    })
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A well-formed UUID v4 (almost surely not a live session).
fn well_formed_id() -> impl Strategy<Value = String> {
    "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
}

/// `id=<real>` with optional whitespace around name and value.
fn real_pair(real: &str) -> impl Strategy<Value = Vec<u8>> {
    let real = real.as_bytes().to_vec();
    (ows(), ows(), ows(), ows())
        .prop_map(move |(a, b, c, d)| cat(&[&a, b"id", &b, b"=", &c, &real, &d]))
}

/// Values that must never pass as an id, many of them close to the real one.
fn bad_value(real: &str) -> impl Strategy<Value = Vec<u8>> {
    let r = real.as_bytes().to_vec();
    let (r1, r2, r3, r4, r5, r6, r7, r8) = (
        r.clone(),
        r.clone(),
        r.clone(),
        r.clone(),
        r.clone(),
        r.clone(),
        r.clone(),
        r.clone(),
    );
    prop_oneof![
        Just(Vec::new()),
        Just(cat(&[b"\"", &r, b"\""])),
        Just(cat(&[b"\\", &r])),
        Just(r.to_ascii_uppercase()),
        Just(r[..35].to_vec()),
        Just(cat(&[&r, &r])),
        Just({
            let mut v = r.clone();
            v[14] = b'1'; // another UUID version
            v
        }),
        Just(format!("%{:02x}{}", r[0], &real[1..]).into_bytes()),
        Just(format!("{{{real}}}").into_bytes()),
        Just(r.iter().filter(|&&b| b != b'-').copied().collect()),
        pair_byte().prop_map(move |b| cat(&[&r1, &[b]])),
        pair_byte().prop_map(move |b| cat(&[&[b], &r2])),
        (0..36usize, pair_byte()).prop_map(move |(i, b)| {
            let mut v = r3.clone();
            v[i] = b;
            v
        }),
        (0..36usize, 0x80u8..=0xff).prop_map(move |(i, b)| {
            let mut v = r4.clone();
            v[i] = b;
            v
        }),
        (1..120usize).prop_map(move |n| r5.repeat(n)),
        (0..36usize).prop_map(move |i| {
            let mut v = r6.clone();
            v.remove(i);
            v
        }),
        (0..37usize, select(b" \t\"\\,".to_vec())).prop_map(move |(i, b)| {
            let mut v = r7.clone();
            v.insert(i, b);
            v
        }),
        Just(
            String::from_utf8_lossy(&r8)
                .replace('a', "\u{430}")
                .into_bytes()
        ),
        pair_bytes(60),
    ]
}

/// `id=<value that is not a well-formed id>`.
fn bad_id_pair(real: &str) -> impl Strategy<Value = Vec<u8>> {
    (ows(), ows(), ows(), bad_value(real))
        .prop_map(|(a, b, c, v)| cat(&[&a, b"id", &b, b"=", &c, &v]))
        .prop_filter("not a well-formed id pair", |p| !is_id_pair(p, b"id"))
}

/// Names of other cookies, many of them close to ours.
fn other_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            "ID",
            "Id",
            "iD",
            "%69d",
            "i%64",
            "%69%64",
            "id2",
            "xid",
            "i d",
            "\"id\"",
            "__Host-id",
            "__HOST-id",
            "\u{ff49}d",
            "\u{131}d",
            "id\\",
            "sid",
            "_id",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        vec(pair_byte().prop_filter("no '='", |b| *b != b'='), 1..12),
    ]
}

/// A pair that can never be a well-formed `id` pair: other names, nameless
/// pairs, bare words, our name with bad values, non-UTF-8 bytes.
fn junk_pair(real: &str) -> impl Strategy<Value = Vec<u8>> {
    let r = real.as_bytes().to_vec();
    let value = prop_oneof![pair_bytes(40), Just(r.clone())];
    prop_oneof![
        3 => (other_name(), ows(), ows(), value.clone())
            .prop_map(|(n, a, b, v)| cat(&[&n, &a, b"=", &b, &v])),
        1 => (ows(), value).prop_map(|(a, v)| cat(&[&a, b"=", &v])),
        1 => prop_oneof![
            vec(pair_byte().prop_filter("no '='", |b| *b != b'='), 0..40),
            Just(r),
        ],
        2 => bad_id_pair(real),
        1 => vec(0x80u8..=0xff, 1..8),
        1 => ows(),
    ]
    .prop_filter("not a well-formed id pair", |p| !is_id_pair(p, b"id"))
}

/// Lays pairs out over one or more `Cookie` fields: each pair comes with the
/// separator after it and whether a new field starts after it.
fn layout(lead: Vec<u8>, pieces: Vec<(Vec<u8>, Vec<u8>, bool)>) -> Fields {
    let mut fields = vec![lead];
    for (pair, sep, new_field) in pieces {
        let field = fields.last_mut().unwrap();
        field.extend(pair);
        if new_field {
            fields.push(Vec::new());
        } else {
            field.extend(sep);
        }
    }
    Fields(fields)
}

/// A piece for [`layout`]: the pair, a separator, sometimes a field break.
fn piece(pair: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>, bool)> {
    (pair, sep(), prop::bool::weighted(0.25))
}

fn lead() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![ows(), sep()]
}

// ---------------------------------------------------------------------------
// The runner: one runtime and one real session per property.

fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn check<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> TestCaseResult) {
    if let Err(e) = runner().run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// (a) Arbitrary bytes: no panic, no session unless our exact pair is there.

#[test]
fn arbitrary_bytes_never_panic_and_never_yield_a_session() {
    let fx = Fixture::new();
    let field = prop_oneof![vec(any::<u8>(), 0..24), vec(header_byte(), 0..300)];
    check(vec(field, 1..5), |raw| {
        // Skip the fields `HeaderValue` refuses (controls, DEL); send the rest.
        let fields: Vec<Vec<u8>> = raw
            .into_iter()
            .filter(|f| HeaderValue::from_bytes(f).is_ok())
            .collect();
        let seen = fx.seen(&fields);
        prop_assert_eq!(&seen, &fx.expected(&fields), "{:?}", Fields(fields.clone()));
        prop_assert_eq!(seen, None);
        Ok(())
    });
}

#[test]
fn token_soup_matches_the_documented_rules() {
    let fx = Fixture::new();
    let real = fx.real.clone();
    let token = prop_oneof![
        3 => Just(b"id=".to_vec()),
        2 => Just(format!("id={real}").into_bytes()),
        2 => Just(real.clone().into_bytes()),
        2 => well_formed_id().prop_map(String::into_bytes),
        4 => select(vec!["; ", ";", "=", " ", "\t", "id", "ID", "\"", "%69d", "\\"])
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => vec(header_byte(), 1..6),
    ];
    // Most tokens start a new pair, so whole pairs form often.
    let token = (
        prop::option::weighted(0.6, select(vec![";", "; ", " ;", "\t;\t", ";;"])),
        token,
    )
        .prop_map(|(sep, t)| cat(&[sep.unwrap_or_default().as_bytes(), &t]));
    let fields = vec(vec(token, 0..16).prop_map(|t| t.concat()), 1..4);
    let (found, fresh) = (Cell::new(0u32), Cell::new(0u32));
    check(fields, |fields| {
        let seen = fx.seen(&fields);
        let counter = if seen.is_some() { &found } else { &fresh };
        counter.set(counter.get() + 1);
        prop_assert_eq!(seen, fx.expected(&fields), "{:?}", Fields(fields));
        Ok(())
    });
    if runner().config().cases >= 64 {
        assert!(
            found.get() > 0 && fresh.get() > 0,
            "both outcomes exercised: {found:?} {fresh:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// (b) Our pair anywhere among junk, over one or several fields: found.

#[test]
fn our_pair_is_found_at_any_position_among_junk() {
    let fx = Fixture::new();
    let strategy = (
        lead(),
        vec(piece(junk_pair(&fx.real)), 0..12),
        piece(real_pair(&fx.real)),
        any::<Index>(),
    )
        .prop_map(|(lead, mut pieces, ours, at)| {
            let at = at.index(pieces.len() + 1);
            pieces.insert(at, ours);
            layout(lead, pieces)
        });
    check(strategy, |Fields(fields)| {
        prop_assert_eq!(
            fx.seen(&fields),
            Some(fx.real.clone()),
            "{:?}",
            Fields(fields)
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// (c) Case and percent variants of the name never match.

#[test]
fn case_and_percent_variants_of_the_name_never_match() {
    let fx = Fixture::new();
    let real = fx.real.clone();
    let variant = prop_oneof![
        (
            select(vec!["i", "I", "%69", "%49", "%6", "\u{ff49}"]),
            select(vec!["d", "D", "%64", "%44", "%6"]),
        )
            .prop_filter("not our own name", |(i, d)| (*i, *d) != ("i", "d"))
            .prop_map(|(i, d)| format!("{i}{d}")),
        select(vec![
            "__Host-id",
            "__HOST-id",
            "__Secure-id",
            "\"id\"",
            "id\\",
            "i\td",
            "%20id"
        ])
        .prop_map(str::to_owned),
    ];
    let variant_pair = (ows(), variant, ows(), ows(), ows()).prop_map(move |(a, n, b, c, d)| {
        cat(&[&a, n.as_bytes(), &b, b"=", &c, real.as_bytes(), &d])
    });
    let strategy = (
        lead(),
        vec(piece(variant_pair), 1..4),
        vec(piece(junk_pair(&fx.real)), 0..6),
    )
        .prop_flat_map(|(lead, variants, junk)| {
            let all: Vec<_> = variants.into_iter().chain(junk).collect();
            (Just(lead), Just(all).prop_shuffle())
        })
        .prop_map(|(lead, pieces)| layout(lead, pieces));
    check(strategy, |Fields(fields)| {
        prop_assert_eq!(
            fx.expected(&fields),
            None,
            "generator: {:?}",
            Fields(fields.clone())
        );
        prop_assert_eq!(fx.seen(&fields), None, "{:?}", Fields(fields));
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// (d) Duplicates: malformed `id=` pairs before ours do not hide it; anything
// after ours (even another well-formed id) does not replace it.

#[test]
fn first_well_formed_duplicate_wins() {
    let fx = Fixture::new();
    let real = fx.real.clone();
    let after = prop_oneof![
        well_formed_id().prop_map(|id| format!("id={id}").into_bytes()),
        Just(format!("id={MADE_UP}").into_bytes()),
        bad_id_pair(&real),
        junk_pair(&real),
    ];
    let strategy = (
        lead(),
        vec(piece(bad_id_pair(&real)), 1..5),
        vec(piece(junk_pair(&real)), 0..4),
        piece(real_pair(&real)),
        vec(piece(after), 0..4),
    )
        .prop_flat_map(|(lead, dups, junk, ours, after)| {
            let before: Vec<_> = dups.into_iter().chain(junk).collect();
            (
                Just(lead),
                Just(before).prop_shuffle(),
                Just(ours),
                Just(after),
            )
        })
        .prop_map(|(lead, before, ours, after)| {
            let pieces = before.into_iter().chain([ours]).chain(after).collect();
            layout(lead, pieces)
        });
    check(strategy, |Fields(fields)| {
        prop_assert_eq!(
            fx.seen(&fields),
            Some(fx.real.clone()),
            "{:?}",
            Fields(fields)
        );
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Fixed cases that pin the documented choices.

/// The rule is "first well-formed", not "first that resolves": an unknown
/// well-formed id before ours gives a fresh session (never last-wins either).
#[test]
fn an_earlier_well_formed_unknown_id_shadows_ours() {
    let fx = Fixture::new();
    let real = &fx.real;
    let one_field = format!("id={MADE_UP}; id={real}").into_bytes();
    assert_eq!(fx.seen(&[one_field]), None);
    let two_fields = [
        format!("id={MADE_UP}").into_bytes(),
        format!("id={real}").into_bytes(),
    ];
    assert_eq!(fx.seen(&two_fields), None);
    let ours_first = format!("id={real}; id={MADE_UP}").into_bytes();
    assert_eq!(fx.seen(&[ours_first]), Some(real.clone()));
}

/// Thousands of pairs and a 64 KB value before ours: still found.
#[test]
fn many_pairs_and_huge_values_before_ours() {
    let fx = Fixture::new();
    let mut field = Vec::new();
    for i in 0..5000 {
        field.extend(format!("c{i}=v{i}; ").bytes());
    }
    field.extend(b"id=");
    field.extend(fx.real.repeat(64 * 1024 / 36).bytes());
    field.extend(format!("; big={}; id={}", "x".repeat(64 * 1024), fx.real).bytes());
    assert_eq!(fx.seen(&[field]), Some(fx.real.clone()));
}
