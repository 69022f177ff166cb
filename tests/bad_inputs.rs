//! The bad inputs of SECURITY.md, one test (or more) per case, over real
//! sockets. The concurrent cases (#17-19, #35) are in tests/concurrency.rs,
//! store failures and bad records (#21-22) in tests/store_failures.rs.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Extension;
use axum::routing::get;
use common::*;
use tokio::sync::oneshot;
use tower_session_storage::{
    MemoryStore, SameSite, SessionError, SessionLayer, SessionStorage, SessionStore,
};

/// A server on a counting memory store, with a session holding `a=1`.
struct Fixture {
    mem: MemoryStore,
    store: TestStore<MemoryStore>,
    srv: TestServer,
    /// The live session's id.
    live: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(|layer| layer).await
    }

    async fn with(
        configure: impl FnOnce(
            SessionLayer<TestStore<MemoryStore>>,
        ) -> SessionLayer<TestStore<MemoryStore>>,
    ) -> Self {
        let mem = MemoryStore::new();
        let store = TestStore::new(mem.clone());
        let srv = serve_script(configure(dev_layer(store.clone()))).await;
        let live = srv.raw("set=a:1", None).await.new_id().unwrap();
        Self {
            mem,
            store,
            srv,
            live,
        }
    }

    /// Asserts that `cookie` gives a fresh session without asking the store,
    /// and that a malformed cookie of ours in it is cleared (SECURITY.md, top).
    async fn assert_fresh_without_store_access(&self, cookie: &[u8]) {
        let before = self.store.counts();
        let r = self.srv.raw_fields("get=a&id", &[cookie]).await;
        assert_eq!(r.ok(), "-,-", "{:?}", String::from_utf8_lossy(cookie));
        let carries_ours = cookie.split(|&b| b == b';').any(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            name.trim_ascii() == b"id" && pair.contains(&b'=')
        });
        if carries_ours {
            assert!(
                r.expires_cookie() && r.set_cookies().len() == 1,
                "a malformed cookie of ours is cleared, nothing else set: {r:?}"
            );
        } else {
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }
        assert_eq!(
            self.store.counts(),
            before,
            "the store was asked for {:?}",
            String::from_utf8_lossy(cookie)
        );
    }

    /// Asserts that `fields` find the live session.
    async fn assert_finds_live(&self, fields: &[&[u8]]) {
        let r = self.srv.raw_fields("get=a&id", fields).await;
        assert_eq!(r.ok(), format!("1,{}", self.live), "{fields:?}");
    }
}

fn has_attr(set_cookie: &str, attr: &str) -> bool {
    set_cookie
        .split(';')
        .skip(1)
        .any(|a| a.trim().eq_ignore_ascii_case(attr))
}

// --- 1 ---------------------------------------------------------------------

#[tokio::test]
async fn no_cookie_is_a_fresh_session() {
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(dev_layer(store.clone())).await;
    for cookie in [None, Some("theme=dark; lang=en"), Some("idx=1; xid=2")] {
        let r = srv.raw("get=a&id", cookie).await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }
    assert_eq!(store.counts(), Counts::default(), "no store access");
    let r = srv.raw("set=a:1", Some("theme=dark")).await;
    assert!(r.new_id().is_some(), "a write gets a server-made id");
}

// --- 2 ---------------------------------------------------------------------

#[tokio::test]
async fn empty_cookie_value_is_a_fresh_session() {
    let f = Fixture::new().await;
    for c in ["id=", "id= ", "id=; a=1", "a=1; id=;"] {
        f.assert_fresh_without_store_access(c.as_bytes()).await;
    }
    let r = f.srv.raw("set=a:2", Some("id=")).await;
    let id = r.new_id().unwrap();
    assert_ne!(id, f.live);
}

// --- 3 ---------------------------------------------------------------------

#[tokio::test]
async fn nameless_and_bare_pairs_never_match() {
    let f = Fixture::new().await;
    let live = &f.live;
    for c in [
        format!("={live}"),
        format!(" = {live}"),
        live.clone(),
        format!("{live}; ={live}"),
        format!("a=1; {live}; ={live}; b"),
        "=".into(),
        ";".into(),
    ] {
        f.assert_fresh_without_store_access(c.as_bytes()).await;
    }
}

// --- 4 ---------------------------------------------------------------------

#[tokio::test]
async fn unknown_well_formed_id_is_never_adopted() {
    let f = Fixture::new().await;
    let made_up = made_up_id();
    let before = f.store.counts();
    let r = f.srv.raw("get=a&id", Some(&cookie(&made_up))).await;
    assert_eq!(r.ok(), "-,-");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    assert_eq!(f.store.counts().writes(), before.writes());

    let r = f.srv.raw("set=a:2&id", Some(&cookie(&made_up))).await;
    assert_eq!(r.ok(), "-", "no id while the session is new");
    let id = r.new_id().unwrap();
    assert_ne!(
        id, made_up,
        "the client's id was adopted (Fiber CVE-2024-38513)"
    );
    assert!(!exists(f.store.inner(), &made_up).await);
    assert_eq!(f.srv.raw("get=a", Some(&cookie(&made_up))).await.ok(), "-");
}

// --- 5 ---------------------------------------------------------------------

#[tokio::test]
async fn expired_or_destroyed_id_is_never_resurrected() {
    let f = Fixture::with(|l| l.with_idle_timeout(Duration::from_secs(1))).await;
    let destroyed = f.live.clone();
    assert!(f
        .srv
        .raw("destroy", Some(&cookie(&destroyed)))
        .await
        .expires_cookie());
    let expired = f.srv.raw("set=a:1", None).await.new_id().unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;

    for old in [&destroyed, &expired] {
        let c = cookie(old);
        let r = f.srv.raw("get=a&id", Some(&c)).await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        let r = f.srv.raw("set=a:2", Some(&c)).await;
        let new = r.new_id().unwrap();
        assert_ne!(&new, old, "resurrected under the old id");
        assert!(!exists(f.store.inner(), old).await);
        assert_eq!(f.srv.raw("get=a", Some(&c)).await.ok(), "-");
    }
}

// --- 6 ---------------------------------------------------------------------

#[tokio::test]
async fn malformed_ids_are_rejected_before_any_store_io() {
    let f = Fixture::new().await;
    let live = f.live.as_bytes();
    let mut cases: Vec<Vec<u8>> = vec![
        // wrong length
        live[..35].to_vec(),
        [live, b"0"].concat(),
        live.iter().copied().filter(|&b| b != b'-').collect(),
        // wrong alphabet or form
        live.to_ascii_uppercase(),
        [b"{", live, b"}"].concat(),
        live.iter()
            .map(|&b| if b == b'-' { b'_' } else { b })
            .collect(),
        [b"urn:uuid:".as_slice(), live].concat(),
    ];
    // another UUID version; another variant
    let mut v1 = live.to_vec();
    v1[14] = b'1';
    cases.push(v1);
    let mut variant = live.to_vec();
    variant[19] = b'c';
    cases.push(variant);
    // non-ASCII (a two-byte letter in place of two hex digits), invalid UTF-8
    let mut non_ascii = live.to_vec();
    non_ascii[0..2].copy_from_slice("é".as_bytes());
    cases.push(non_ascii);
    let mut invalid = live.to_vec();
    invalid[0] = 0xff;
    cases.push(invalid);

    for value in cases {
        let c = [b"id=".as_slice(), &value].concat();
        f.assert_fresh_without_store_access(&c).await;
    }
    // The live id itself still works: the cases failed for their form only.
    f.assert_finds_live(&[cookie(&f.live).as_bytes()]).await;
}

// --- 7 ---------------------------------------------------------------------

#[tokio::test]
async fn very_long_cookie_values_are_a_fresh_session() {
    let f = Fixture::new().await;
    for len in [4 * 1024, 16 * 1024, 64 * 1024] {
        // Starts with the live id: a parser that cut the value short would
        // find the session.
        let value = format!("{}{}", f.live, "0".repeat(len));
        f.assert_fresh_without_store_access(format!("id={value}").as_bytes())
            .await;
        let r = f.srv.raw("set=a:2", Some(&format!("id={value}"))).await;
        assert_ne!(r.new_id().unwrap(), f.live);
    }
}

// --- 8 ---------------------------------------------------------------------

#[tokio::test]
async fn encoded_or_case_variant_names_are_other_cookies() {
    let f = Fixture::new().await;
    for name in ["%69d", "%69%64", "ID", "Id", "iD", "i%64", "\"id\"", "id "] {
        let c = format!("{name}={}", f.live);
        // "id " is the only one a parser may legitimately trim to "id".
        if name == "id " {
            f.assert_finds_live(&[c.as_bytes()]).await;
        } else {
            f.assert_fresh_without_store_access(c.as_bytes()).await;
        }
    }

    // A `__Host-` name: `__HOST-id` and `__host-id` are other cookies.
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(SessionLayer::new(store.clone()).with_cookie_name("__Host-id")).await;
    let r = srv.raw("set=a:1", None).await;
    let id = r.id_named("__Host-id").unwrap();
    let ok = srv.raw("get=a", Some(&format!("__Host-id={id}"))).await;
    assert_eq!(ok.ok(), "1");
    let loads = store.counts().load;
    for name in ["__HOST-id", "__host-id", "__Host-ID", "%5F%5FHost-id", "id"] {
        let r = srv.raw("get=a", Some(&format!("{name}={id}"))).await;
        assert_eq!(r.ok(), "-", "{name}");
    }
    assert_eq!(store.counts().load, loads, "no look-up for other names");
}

// --- 9 ---------------------------------------------------------------------

/// The documented rule: the first pair with our name and a well-formed id
/// wins; later ones are ignored. Never last-wins.
#[tokio::test]
async fn duplicate_cookie_names_first_well_formed_id_wins() {
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(dev_layer(store.clone())).await;
    let a = srv.raw("set=who:A", None).await.new_id().unwrap();
    let b = srv.raw("set=who:B", None).await.new_id().unwrap();
    let unknown = made_up_id();

    for (header, want) in [
        (format!("id={a}; id={b}"), "A"),
        (format!("id={b}; id={a}"), "B"),
        (format!("id=; id=junk; id=\"{a}\"; id={b}; id={a}"), "B"),
        (format!("x=1; id={a}; y=2; id={b}"), "A"),
        // The first well-formed id decides even when the store does not
        // know it: a fresh session, not the later valid one.
        (format!("id={unknown}; id={a}"), "-"),
    ] {
        let loads = store.counts().load;
        let r = srv.raw("get=who", Some(&header)).await;
        assert_eq!(r.ok(), want, "{header}");
        assert_eq!(store.counts().load, loads + 1, "one look-up: {header}");
    }
}

// --- 10 --------------------------------------------------------------------

#[tokio::test]
async fn every_cookie_header_field_is_read_in_order() {
    let srv = serve_script(dev_layer(MemoryStore::new())).await;
    let a = srv.raw("set=who:A", None).await.new_id().unwrap();
    let b = srv.raw("set=who:B", None).await.new_id().unwrap();
    let (ca, cb) = (cookie(&a), cookie(&b));

    for (fields, want) in [
        (vec!["x=1", ca.as_str()], "A"),
        (vec!["x=1", "y=2", "z=3", cb.as_str()], "B"),
        (vec![cb.as_str(), ca.as_str()], "B"),
        (vec![ca.as_str(), cb.as_str()], "A"),
        (vec!["id=junk", "id=", cb.as_str()], "B"),
    ] {
        let raw: Vec<&[u8]> = fields.iter().map(|f| f.as_bytes()).collect();
        let r = srv.raw_fields("get=who", &raw).await;
        assert_eq!(r.ok(), want, "{fields:?}");
    }
}

// --- 11 --------------------------------------------------------------------

#[tokio::test]
async fn quoted_or_escaped_cookie_values_are_invalid() {
    let f = Fixture::new().await;
    let live = &f.live;
    for c in [
        format!("id=\"{live}\""),
        format!("id=\\\"{live}\\\""),
        format!("id={live}\\"),
        format!("id=\\{live}"),
        format!("id=\"{live}"),
        format!("id={}\\{}", &live[..18], &live[19..]),
    ] {
        f.assert_fresh_without_store_access(c.as_bytes()).await;
    }
}

// --- 12 --------------------------------------------------------------------

#[tokio::test]
async fn whitespace_tabs_and_empty_pairs_are_tolerated() {
    let f = Fixture::new().await;
    let live = &f.live;
    for c in [
        format!(";; id={live}"),
        format!("id={live};"),
        format!("id={live};;;"),
        format!("a=1;;id={live};"),
        format!("a=1; \t id \t= \t{live} \t; b=2"),
        format!("\t;\t; id={live}\t"),
    ] {
        f.assert_finds_live(&[c.as_bytes()]).await;
    }
}

// --- 13 --------------------------------------------------------------------

#[tokio::test]
async fn thousands_of_pairs_still_find_our_cookie() {
    let f = Fixture::new().await;
    let others: String = (0..5000).map(|i| format!("c{i}=v{i}; ")).collect();
    let junk_ours: String = (0..3000).map(|_| "id=junk; ").collect();
    let at_end = format!("{others}{junk_ours}id={}", f.live);
    f.assert_finds_live(&[at_end.as_bytes()]).await;
    let at_start = format!("id={}; {others}", f.live);
    f.assert_finds_live(&[at_start.as_bytes()]).await;
    // Thousands of pairs and none of ours: fresh, no look-up.
    f.assert_fresh_without_store_access(others.as_bytes()).await;
}

// --- 14 --------------------------------------------------------------------

#[tokio::test]
async fn non_utf8_bytes_elsewhere_do_not_hide_our_cookie() {
    let f = Fixture::new().await;
    let ours = cookie(&f.live);
    let same_field = [b"a=\xff\xfe; b=\x80\x81; ".as_slice(), ours.as_bytes()].concat();
    f.assert_finds_live(&[&same_field]).await;
    let after = [ours.as_bytes(), b"; z=\xc3\x28\xff".as_slice()].concat();
    f.assert_finds_live(&[&after]).await;
    f.assert_finds_live(&[b"junk=\xff\xff", ours.as_bytes()])
        .await;
}

// --- 15 --------------------------------------------------------------------

#[tokio::test]
async fn flood_without_cookies_or_with_random_ids_writes_nothing() {
    let mem = MemoryStore::new();
    let store = TestStore::new(mem.clone());
    let srv = Arc::new(serve_script(dev_layer(store.clone())).await);
    // Handlers that read, remove, clear, destroy, cycle or write "": none of
    // it is a write on a session that does not exist.
    let scripts = [
        "get=a", "remove=a", "clear", "destroy", "cycle", "set=a:", "id",
    ];
    let mut tasks = Vec::new();
    for i in 0..300 {
        let srv = srv.clone();
        let cookie = match i % 3 {
            0 => None,
            1 => Some(cookie(&made_up_id())),
            _ => Some(format!("id=junk{i}")),
        };
        let script = scripts[i % scripts.len()];
        tasks.push(tokio::spawn(async move {
            srv.raw(script, cookie.as_deref()).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = guard(t).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        if i % 3 == 2 {
            // `id=junk…` is not an id: cleared, no session handed out.
            assert!(r.expires_cookie() && r.set_cookies().len() == 1, "{r:?}");
        } else {
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }
    }
    let counts = store.counts();
    assert_eq!(counts.writes(), 0, "{counts:?}");
    assert_eq!(counts.load, 100, "only the well-formed ids are looked up");
    assert_eq!(mem.len(), 0, "memory stays flat");
}

// --- 16 --------------------------------------------------------------------

#[tokio::test]
async fn id_collision_on_create_is_retried_with_a_fresh_id() {
    let store = TestStore::new(MemoryStore::new()).collide_creates(2);
    let srv = serve_script(dev_layer(store.clone())).await;
    let r = srv.raw("set=a:1", None).await;
    let id = r.new_id().expect("the retry succeeded");
    let tried = store.take_tried();
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0] != tried[1] && tried[1] != tried[2] && tried[0] != tried[2]);
    assert_eq!(tried[2], id, "the cookie carries the id that was stored");
    assert_eq!(srv.raw("get=a", Some(&cookie(&id))).await.ok(), "1");
    assert_eq!(store.inner().len(), 1);
}

#[tokio::test]
async fn id_collision_on_cycle_is_retried_with_a_fresh_id() {
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(dev_layer(store.clone())).await;
    let old = srv.raw("set=a:1", None).await.new_id().unwrap();
    store.take_tried();
    store.collide_next(Op::Cycle, 1);
    let r = srv.raw("cycle&set=b:2", Some(&cookie(&old))).await;
    let new = r.new_id().expect("the retry succeeded");
    let tried = store.take_tried();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert_ne!(tried[0], tried[1]);
    assert_eq!(tried[1], new);
    assert_eq!(
        srv.raw("get=a&get=b", Some(&cookie(&new))).await.ok(),
        "1,2"
    );
    assert_eq!(srv.raw("get=a", Some(&cookie(&old))).await.ok(), "-");
    assert_eq!(store.inner().len(), 1);
}

/// A store that reports every new id as taken: a 5xx, no cookie, nothing
/// stored, and (for a cycle) the session left as it was. Never a loop.
#[tokio::test]
async fn endless_id_collisions_fail_cleanly() {
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(dev_layer(store.clone())).await;
    let old = srv.raw("set=a:1", None).await.new_id().unwrap();
    store.collide_next(Op::Create, usize::MAX);
    store.collide_next(Op::Cycle, usize::MAX);

    let r = srv.raw("set=a:1", None).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    let r = srv.raw("cycle&set=b:2", Some(&cookie(&old))).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    assert_eq!(store.inner().len(), 1);
    assert_eq!(
        srv.raw("get=a&get=b", Some(&cookie(&old))).await.ok(),
        "1,-",
        "the failed cycle changed nothing"
    );
}

// --- 17, 18, 19: tests/concurrency.rs ----------------------------------------

// --- 20 --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_response_persists_nothing() {
    let mem = MemoryStore::new();
    common::suite::server_error_response_persists_nothing(mem.clone()).await;
    assert_eq!(mem.len(), 1, "only the session the 2xx request created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_service_error_persists_nothing() {
    let mem = MemoryStore::new();
    common::suite::inner_service_error_persists_nothing(mem.clone()).await;
    assert_eq!(mem.len(), 1);
}

// --- 21, 22: tests/store_failures.rs -----------------------------------------

// --- 23 --------------------------------------------------------------------

#[tokio::test]
async fn over_the_caps_set_item_errs_and_nothing_is_truncated() {
    let f = Fixture::with(|l| l.with_max_items(3).with_max_session_bytes(100)).await;
    let c = cookie(&f.live);
    // a=1 is there: two more items fit, the fourth does not.
    let r = f.srv.raw("set=b:1&set=c:1&set=d:1&get=d", Some(&c)).await;
    assert_eq!(r.ok(), "err:too_many_items,-");
    // Overwriting an existing key is not a new item.
    let r = f.srv.raw("set=a:2&get=a", Some(&c)).await;
    assert_eq!(r.ok(), "2");
    // Bytes count keys and values: with b=1 and c=1 (4 bytes), the item
    // a may hold 95 bytes (1 + 95 + 4 = 100), not 96.
    let r = f.srv.raw("big=a:96&get=a&big=a:95", Some(&c)).await;
    assert_eq!(r.ok(), "err:too_large,2", "refused, and a keeps its value");
    let r = f.srv.raw("get=a&get=b&get=c&get=d", Some(&c)).await;
    assert_eq!(r.ok(), "x".repeat(95) + ",1,1,-");
    let stored = stored_item(f.store.inner(), &f.live, "a").await.unwrap();
    assert_eq!(stored.len(), 95, "stored whole");

    // A fresh session whose only write is refused is not created.
    let writes = f.store.counts().writes();
    let r = f.srv.raw("big=t:200", None).await;
    assert_eq!(r.ok(), "err:too_large");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    assert_eq!(f.store.counts().writes(), writes);
    assert_eq!(f.mem.len(), 1);
}

// --- 24 --------------------------------------------------------------------

#[tokio::test]
async fn empty_value_removes_and_an_emptied_session_is_deleted() {
    let mem = MemoryStore::new();
    common::suite::empty_value_removes_the_item_and_an_emptied_session_is_deleted(mem.clone())
        .await;
    assert_eq!(mem.len(), 0);
}

// --- 25 --------------------------------------------------------------------

#[tokio::test]
async fn many_writes_are_one_store_write_and_one_set_cookie() {
    let store = TestStore::new(MemoryStore::new());
    let srv = serve_script(dev_layer(store.clone())).await;
    let script: Vec<String> = (0..100).map(|i| format!("set=k{}:{i}", i % 10)).collect();
    let script = script.join("&");

    let r = srv.raw(&script, None).await;
    assert_eq!(r.set_cookies().len(), 1, "{r:?}");
    let id = r.new_id().unwrap();
    let c = store.counts();
    assert_eq!((c.create, c.writes()), (1, 1), "{c:?}");

    let r = srv
        .raw(&format!("{script}&remove=k0"), Some(&cookie(&id)))
        .await;
    assert!(r.set_cookies().is_empty(), "{r:?}");
    let c = store.counts();
    assert_eq!((c.save, c.writes()), (1, 2), "{c:?}");
    assert_eq!(
        srv.raw("get=k0&get=k9", Some(&cookie(&id))).await.ok(),
        "-,99"
    );
}

// --- 26 --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_set_cookie_for_our_name_never_makes_two() {
    common::suite::exactly_one_set_cookie_for_our_name(MemoryStore::new()).await;
}

// --- 27 --------------------------------------------------------------------

fn build<S: SessionStore>(layer: SessionLayer<S>) {
    use tower::ServiceBuilder;
    let svc = tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    });
    let _ = ServiceBuilder::new().layer(layer).service(svc);
}

#[test]
#[should_panic(expected = "SameSite=None requires Secure: call .with_secure(true)")]
fn same_site_none_without_secure_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_same_site(SameSite::None)
            .with_secure(false),
    );
}

#[test]
#[should_panic(expected = "requires Secure: call .with_secure(true) or drop the __Host- prefix")]
fn host_prefix_without_secure_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__Host-id")
            .with_secure(false),
    );
}

#[test]
#[should_panic(expected = "must not have a Domain: remove .with_domain(..)")]
fn host_prefix_with_domain_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__Host-id")
            .with_domain("example.com"),
    );
}

#[test]
#[should_panic(expected = "must have Path=/: call .with_path(\"/\")")]
fn host_prefix_with_another_path_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__Host-id")
            .with_path("/x"),
    );
}

#[test]
#[should_panic(expected = "requires Secure: call .with_secure(true) or drop the __Secure- prefix")]
fn secure_prefix_without_secure_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__Secure-id")
            .with_secure(false),
    );
}

/// SECURITY.md #33: browsers match the prefixes without regard to case, so
/// `__HOST-id` with a `Domain` is refused like `__Host-id`.
#[test]
#[should_panic(expected = "must not have a Domain: remove .with_domain(..)")]
fn upper_case_host_prefix_with_domain_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__HOST-id")
            .with_domain("example.com"),
    );
}

/// SECURITY.md #33: `__secure-id` without `Secure` is refused like `__Secure-id`.
#[test]
#[should_panic(expected = "requires Secure: call .with_secure(true) or drop the __Secure- prefix")]
fn lower_case_secure_prefix_without_secure_is_refused() {
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__secure-id")
            .with_secure(false),
    );
}

/// The settings the checks above refuse work once fixed, in axum too.
#[tokio::test]
async fn valid_prefixed_configs_are_accepted() {
    build(SessionLayer::new(MemoryStore::new()).with_same_site(SameSite::None));
    build(
        SessionLayer::new(MemoryStore::new())
            .with_cookie_name("__Secure-id")
            .with_domain("example.com")
            .with_path("/app"),
    );
    let srv =
        serve_script(SessionLayer::new(MemoryStore::new()).with_cookie_name("__Host-id")).await;
    let set = srv
        .raw("set=a:1", None)
        .await
        .set_cookie_named("__Host-id")
        .unwrap();
    assert!(
        has_attr(&set, "Secure") && has_attr(&set, "Path=/"),
        "{set}"
    );
    assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
}

/// Max-Age over 400 days is clamped to 400 days (34,560,000 s).
#[tokio::test]
async fn max_age_is_clamped_to_400_days() {
    let layer = dev_layer(MemoryStore::new())
        .with_persistent_cookie(true)
        .with_idle_timeout(Duration::from_secs(1000 * 24 * 3600));
    let srv = serve_script(layer).await;
    let set = srv.raw("set=a:1", None).await.set_cookie().unwrap();
    assert_eq!(max_age(&set), Some(34_560_000), "{set}");
}

// --- 28 --------------------------------------------------------------------

#[tokio::test]
async fn secure_comes_from_config_not_from_the_request() {
    let secure = serve_script(SessionLayer::new(MemoryStore::new())).await;
    let insecure = serve_script(dev_layer(MemoryStore::new())).await;
    for (srv, proto, want) in [(&secure, "http", true), (&insecure, "https", false)] {
        let req = raw_client()
            .get(srv.url("/s?set=a:1"))
            .header("x-forwarded-proto", proto)
            .header("forwarded", format!("proto={proto}"))
            .header(
                "x-forwarded-ssl",
                if proto == "https" { "on" } else { "off" },
            );
        let r = send(req).await;
        let set = r.set_cookie().unwrap();
        assert_eq!(
            has_attr(&set, "Secure"),
            want,
            "X-Forwarded-Proto: {proto}: {set}"
        );
        // The cookie that ends the session follows the same rule.
        let req = raw_client()
            .get(srv.url("/s?destroy"))
            .header("cookie", cookie(&r.new_id().unwrap()))
            .header("x-forwarded-proto", proto);
        let set = send(req).await.set_cookie().unwrap();
        assert_eq!(has_attr(&set, "Secure"), want, "{set}");
    }
}

/// The value of the attribute `name` of a `Set-Cookie` (`None`: absent).
fn attr<'a>(set_cookie: &'a str, name: &str) -> Option<&'a str> {
    set_cookie.split(';').skip(1).find_map(|a| {
        let (k, v) = a.trim().split_once('=')?;
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// The cookie that ends a session (after `destroy()`, or when its last
/// item is removed) carries the same non-default `Path` and `Domain` as the
/// cookie that set it: a browser deletes a cookie only when both match, so
/// a removal without them would leave the old cookie in place.
#[tokio::test]
async fn the_removal_cookie_keeps_a_non_default_path_and_domain() {
    let app = script_routes().layer(
        dev_layer(MemoryStore::new())
            .with_path("/app")
            .with_domain("example.com"),
    );
    let first = call(&app, "set=a:1", None).await;
    let set = first.set_cookie().unwrap();
    assert_eq!(attr(&set, "Path"), Some("/app"), "{set}");
    assert_eq!(attr(&set, "Domain"), Some("example.com"), "{set}");

    for end in ["destroy", "set=a:"] {
        let id = call(&app, "set=a:1", None).await.new_id().unwrap();
        let r = call(&app, end, Some(&cookie(&id))).await;
        assert!(r.expires_cookie(), "{end}: {r:?}");
        let removal = r.set_cookie().unwrap();
        assert_eq!(attr(&removal, "Path"), Some("/app"), "{end}: {removal}");
        assert_eq!(
            attr(&removal, "Domain"),
            Some("example.com"),
            "{end}: {removal}"
        );
    }
}

// --- 29 --------------------------------------------------------------------

#[tokio::test]
async fn cycle_id_moves_data_and_the_old_id_is_never_resurrected() {
    let f = Fixture::new().await;
    let old = f.live.clone();
    let r = f.srv.raw("set=user:alice&cycle", Some(&cookie(&old))).await;
    let new = r.new_id().unwrap();
    assert_ne!(new, old);
    assert_eq!(f.mem.len(), 1, "moved, not copied");
    assert_eq!(
        f.srv.raw("get=a&get=user", Some(&cookie(&new))).await.ok(),
        "1,alice"
    );
    // The old id: fresh, a write gets yet another id, never the old one.
    let r = f.srv.raw("get=a&get=user", Some(&cookie(&old))).await;
    assert_eq!(r.ok(), "-,-");
    let r = f.srv.raw("set=user:mallory", Some(&cookie(&old))).await;
    let third = r.new_id().unwrap();
    assert!(third != old && third != new);
    assert!(!exists(f.store.inner(), &old).await);
    assert_eq!(
        f.srv.raw("get=user", Some(&cookie(&new))).await.ok(),
        "alice"
    );
}

// --- 30 --------------------------------------------------------------------

/// Over real sockets with a store that never evicts (so only the layer's
/// own check on load can end the session): idle 1 s, absolute 1.5 s.
#[tokio::test]
async fn timeouts_are_checked_on_load_server_side() {
    let store = NoTtlStore::default();
    let idle =
        serve_script(dev_layer(store.clone()).with_idle_timeout(Duration::from_secs(1))).await;
    let absolute = serve_script(
        dev_layer(store.clone())
            .with_idle_timeout(Duration::from_secs(600))
            .with_absolute_timeout(Duration::from_millis(1500)),
    )
    .await;
    let a = idle.raw("set=a:1", None).await.new_id().unwrap();
    let b = absolute.raw("set=a:1", None).await.new_id().unwrap();
    assert_eq!(absolute.raw("get=a", Some(&cookie(&b))).await.ok(), "1");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(store.len(), 2, "the store itself evicted nothing");

    for (srv, old) in [(&idle, &a), (&absolute, &b)] {
        let r = srv.raw("get=a", Some(&cookie(old))).await;
        assert_eq!(r.ok(), "-");
        assert!(!exists(&store, old).await, "deleted on load");
        let r = srv.raw("set=a:2", Some(&cookie(old))).await;
        assert_ne!(&r.new_id().unwrap(), old, "not resurrected");
    }
}

// --- 31 --------------------------------------------------------------------

#[tokio::test]
async fn full_memory_store_refuses_new_sessions_with_503() {
    let mem = MemoryStore::new().with_max_sessions(2);
    let srv = serve_script(dev_layer(mem.clone())).await;
    let a = srv.raw("set=n:a", None).await.new_id().unwrap();
    let b = srv.raw("set=n:b", None).await.new_id().unwrap();

    let r = srv.raw("set=n:c", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.set_cookies().is_empty(), "{r:?}");
    assert_eq!(mem.len(), 2);

    // The live sessions are not evicted and keep working, reads and writes.
    assert_eq!(srv.raw("get=n&set=m:1", Some(&cookie(&a))).await.ok(), "a");
    assert_eq!(srv.raw("get=n&get=m", Some(&cookie(&a))).await.ok(), "a,1");
    assert_eq!(srv.raw("get=n", Some(&cookie(&b))).await.ok(), "b");
    // Requests that create nothing are not refused.
    assert_eq!(srv.raw("get=n", None).await.ok(), "-");

    // Room again once one ends.
    assert!(srv.raw("destroy", Some(&cookie(&b))).await.expires_cookie());
    assert!(srv.raw("set=n:c", None).await.new_id().is_some());
}

/// A full store reclaims expired sessions before refusing: on paused time,
/// in-process (the memory store reads tokio's clock).
#[tokio::test(start_paused = true)]
async fn expired_sessions_make_room_before_anything_is_refused() {
    let mem = MemoryStore::new().with_max_sessions(2);
    let app =
        script_routes().layer(dev_layer(mem.clone()).with_idle_timeout(Duration::from_secs(60)));
    let old = call(&app, "set=n:old", None).await.new_id().unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    let live = call(&app, "set=n:live", None).await.new_id().unwrap();
    assert_eq!(call(&app, "set=n:x", None).await.status, 503);

    // 61 s: the first one has expired, the second has not.
    tokio::time::advance(Duration::from_secs(31)).await;
    let r = call(&app, "set=n:new", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let new = r.new_id().unwrap();
    assert_eq!(mem.len(), 2);
    assert_eq!(call(&app, "get=n", Some(&cookie(&live))).await.ok(), "live");
    assert_eq!(call(&app, "get=n", Some(&cookie(&new))).await.ok(), "new");
    assert_eq!(call(&app, "get=n", Some(&cookie(&old))).await.ok(), "-");
}

// --- 32 --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_handle_used_after_the_response_is_ignored() {
    type Late = Result<(), SessionError>;
    type Slot = Arc<
        Mutex<
            Option<(
                oneshot::Receiver<()>,
                oneshot::Sender<(Late, Option<String>)>,
            )>,
        >,
    >;
    let slot: Slot = Arc::default();
    let s2 = slot.clone();
    let mem = MemoryStore::new();
    let app = script_routes()
        .route(
            "/late",
            get(move |Extension(s): Extension<SessionStorage>| {
                let (go, done) = s2.lock().unwrap().take().unwrap();
                async move {
                    // The handle moves into a task that outlives the request.
                    tokio::spawn(async move {
                        go.await.unwrap();
                        let late = s.set_item("late", "1");
                        let removed = s.remove_item("a");
                        s.clear();
                        s.destroy();
                        s.cycle_id();
                        let _ = done.send((late, removed));
                    });
                    "sent"
                }
            }),
        )
        .layer(dev_layer(mem.clone()));
    let srv = TestServer::start(app).await;
    let id = srv.raw("set=a:1", None).await.new_id().unwrap();

    for c in [Some(cookie(&id)), None] {
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        *slot.lock().unwrap() = Some((go_rx, done_tx));
        let mut req = raw_client().get(srv.url("/late"));
        if let Some(c) = &c {
            req = req.header("cookie", c);
        }
        let r = send(req).await;
        assert_eq!(r.ok(), "sent");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        // The response is out; now the task writes.
        go_tx.send(()).unwrap();
        let (late, removed) = guard(done_rx)
            .await
            .expect("the late task panicked or never ran");
        assert!(matches!(late, Err(SessionError::Finished)), "{late:?}");
        assert_eq!(removed, None, "a late remove removes nothing");
    }
    assert_eq!(
        srv.raw("get=a&get=late", Some(&cookie(&id))).await.ok(),
        "1,-",
        "the late writes were not persisted"
    );
    assert_eq!(mem.len(), 1);
}
