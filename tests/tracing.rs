//! Tracing an operator can use: one `DEBUG` span per store operation with
//! its operation, store, outcome and duration; one `ERROR` event per store
//! failure with the store and the error's kind; never a whole session id
//! and never an item value, in any span, field or message.
//!
//! A capturing subscriber is installed process-wide once (so no test
//! thread can leave a callsite's interest cached as "never"); it keeps
//! what each thread emitted, and each test (a current-thread runtime on
//! its own thread) reads its own.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;
#[cfg(feature = "redis")]
mod redis_support;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use common::*;
use tower_session_storage::store::Timestamp;
use tower_session_storage::{MemoryStore, SessionLayer, StoreError};

// ---------------------------------------------------------------------------
// The capturing subscriber
// ---------------------------------------------------------------------------

/// A span or an event as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    thread: ThreadId,
    kind: Kind,
    name: String,
    target: String,
    level: tracing::Level,
    /// Every field, as text (recorded later for spans: appended).
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Span,
    Event,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// Everything a log line could show: the name and every field.
    fn text(&self) -> String {
        let mut t = self.name.clone();
        for (k, v) in &self.fields {
            t.push_str(&format!(" {k}={v}"));
        }
        t
    }
}

#[derive(Default)]
struct Capture {
    next: AtomicU64,
    /// Spans by id, and events, in order.
    seen: Mutex<Vec<(u64, Seen)>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().to_owned(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().to_owned(), v.to_owned());
    }
}

#[derive(Clone)]
struct Subscriber(Arc<Capture>);

impl tracing::Subscriber for Subscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst) + 1;
        let m = span.metadata();
        let mut fields = BTreeMap::new();
        span.record(&mut Fields(&mut fields));
        self.0.seen.lock().unwrap().push((
            id,
            Seen {
                thread: std::thread::current().id(),
                kind: Kind::Span,
                name: m.name().to_owned(),
                target: m.target().to_owned(),
                level: *m.level(),
                fields,
            },
        ));
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut seen = self.0.seen.lock().unwrap();
        if let Some((_, s)) = seen
            .iter_mut()
            .find(|(id, s)| *id == span.into_u64() && s.kind == Kind::Span)
        {
            values.record(&mut Fields(&mut s.fields));
        }
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let m = event.metadata();
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.seen.lock().unwrap().push((
            0,
            Seen {
                thread: std::thread::current().id(),
                kind: Kind::Event,
                name: m.name().to_owned(),
                target: m.target().to_owned(),
                level: *m.level(),
                fields,
            },
        ));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// This thread's view of the process-wide capture: starts empty.
struct Log {
    capture: Arc<Capture>,
    thread: ThreadId,
    from: usize,
}

fn log() -> Log {
    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
    let capture = CAPTURE
        .get_or_init(|| {
            let capture = Arc::new(Capture::default());
            tracing::subscriber::set_global_default(Subscriber(capture.clone())).unwrap();
            capture
        })
        .clone();
    let from = capture.seen.lock().unwrap().len();
    Log {
        capture,
        thread: std::thread::current().id(),
        from,
    }
}

impl Log {
    /// What this thread emitted since the log was made, or since the last
    /// `take`.
    fn take(&mut self) -> Vec<Seen> {
        let seen = self.capture.seen.lock().unwrap();
        let out = seen[self.from..]
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.thread == self.thread)
            .cloned()
            .collect();
        self.from = seen.len();
        out
    }
}

/// The store spans among `seen`.
fn store_spans(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| s.kind == Kind::Span && s.name == "session_store")
        .collect()
}

/// The crate's ERROR events among `seen`.
fn errors(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| {
            s.kind == Kind::Event
                && s.level == tracing::Level::ERROR
                && s.target.starts_with("tower_session_storage")
        })
        .collect()
}

/// `(op, outcome)` of each store span, in order.
fn ops(seen: &[Seen]) -> Vec<(String, String)> {
    store_spans(seen)
        .iter()
        .map(|s| {
            (
                s.field("op").unwrap().to_owned(),
                s.field("outcome").unwrap_or("<none>").to_owned(),
            )
        })
        .collect()
}

const TARGET: &str = "tower_session_storage::telemetry";

// ---------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------

#[tokio::test]
async fn each_store_operation_is_one_debug_span_with_op_store_outcome_and_duration() {
    let mut log = log();
    let app = script_routes().layer(SessionLayer::new(MemoryStore::new()));

    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    let seen = log.take();
    assert_eq!(ops(&seen), [("create".into(), "created".into())]);
    let span = store_spans(&seen)[0];
    assert_eq!(span.level, tracing::Level::DEBUG);
    assert_eq!(span.target, TARGET);
    assert_eq!(span.field("store"), Some("memory"));
    let us: u64 = span.field("duration_us").unwrap().parse().unwrap();
    assert!(us < 60_000_000, "a duration in microseconds: {us}");

    call(&app, "get=a", Some(&cookie(&id))).await;
    call(&app, "set=a:2", Some(&cookie(&id))).await;
    call(&app, "get=a", Some(&cookie(&made_up_id()))).await;
    let id = call(&app, "cycle", Some(&cookie(&id)))
        .await
        .new_id()
        .unwrap();
    call(&app, "destroy", Some(&cookie(&id))).await;
    let seen = log.take();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        ops(&seen),
        pairs(&[
            ("load", "found"),
            ("load", "found"),
            ("save", "saved"),
            ("load", "not_found"),
            ("load", "found"),
            ("cycle", "moved"),
            ("load", "found"),
            ("end", "ok"),
        ])
    );
    for s in store_spans(&seen) {
        assert_eq!(s.field("store"), Some("memory"), "{s:?}");
        assert!(s.field("duration_us").is_some(), "{s:?}");
    }
    assert!(errors(&seen).is_empty(), "{:?}", errors(&seen));
}

/// A network store's call (a pending future) gets its span too, with the
/// outcome and duration recorded when it answers.
#[tokio::test]
async fn a_pending_store_call_gets_its_span_when_it_answers() {
    let mut log = log();
    let store = TestStore::new(MemoryStore::new()).delay(Duration::from_millis(5));
    let app = script_routes().layer(SessionLayer::new(store));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    call(&app, "get=a", Some(&cookie(&id))).await;
    let seen = log.take();
    assert_eq!(
        ops(&seen),
        [
            ("create".to_owned(), "created".to_owned()),
            ("load".to_owned(), "found".to_owned())
        ]
    );
    for s in store_spans(&seen) {
        assert_eq!(s.field("store"), Some("custom"));
        let us: u64 = s.field("duration_us").unwrap().parse().unwrap();
        assert!(us >= 5_000, "the span covers the store's wait: {us} µs");
    }
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

const NONE: u8 = 0;
const LOAD: u8 = 1;
const SAVE: u8 = 2;
const TOUCH: u8 = 3;
const CREATE: u8 = 4;

/// A store whose calls fail on demand; while `DUE` is set, what loads
/// return is due a refresh (it expires in 10 s, under a 24 h idle timeout).
fn failing() -> (TestStore<MemoryStore>, Arc<AtomicU8>) {
    let fail = Arc::new(AtomicU8::new(NONE));
    let (f, d) = (fail.clone(), fail.clone());
    let store = TestStore::new(MemoryStore::new())
        .map_loads(move |mut r| {
            if d.load(Ordering::SeqCst) == TOUCH {
                r.expires_at = Timestamp::now().saturating_add(Duration::from_secs(10));
            }
            Some(r)
        })
        .fail_when(move |op| match (f.load(Ordering::SeqCst), op) {
            (LOAD, Op::Load) | (TOUCH, Op::Touch) => {
                Some(StoreError::unavailable("connection refused (test)"))
            }
            (SAVE, Op::Save) | (CREATE, Op::Create) => {
                Some(StoreError::other("script error (test)"))
            }
            _ => None,
        });
    (store, fail)
}

#[tokio::test]
async fn each_store_failure_is_one_error_event_with_the_store_and_its_kind() {
    let mut log = log();
    let (store, fail) = failing();
    let app = script_routes().layer(SessionLayer::new(store.clone()));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    log.take();

    let cases = [
        (LOAD, "get=a", 503, "load", "unavailable"),
        (SAVE, "set=a:2", 500, "save", "other"),
        (CREATE, "set=b:1", 500, "create", "other"),
    ];
    for (mode, script, status, op, kind) in cases {
        fail.store(mode, Ordering::SeqCst);
        let cookie = (op != "create").then(|| cookie(&id));
        assert_eq!(call(&app, script, cookie.as_deref()).await.status, status);
        fail.store(NONE, Ordering::SeqCst);
        let seen = log.take();
        let errors = errors(&seen);
        assert_eq!(
            errors.len(),
            1,
            "{op}: one ERROR event, not more: {errors:?}"
        );
        let e = errors[0];
        assert_eq!(e.target, TARGET);
        assert_eq!(e.field("op"), Some(op));
        assert_eq!(e.field("store"), Some("custom"));
        assert_eq!(e.field("kind"), Some(kind));
        assert!(e.field("error").unwrap().contains("(test)"), "{e:?}");
        assert!(e.field("message").unwrap().contains("failed"), "{e:?}");
        // The span of the failed call says so.
        let span = store_spans(&seen)
            .into_iter()
            .find(|s| s.field("op") == Some(op))
            .unwrap();
        assert_eq!(span.field("outcome"), Some("error"));
    }

    // A failed refresh: the request succeeds, the failure is one ERROR
    // event (a store failure like any other), not a warning. (In TOUCH
    // mode the loaded session is due a refresh.)
    fail.store(TOUCH, Ordering::SeqCst);
    let r = call(&app, "get=a", Some(&cookie(&id))).await;
    fail.store(NONE, Ordering::SeqCst);
    assert_eq!((r.status, r.body.as_str()), (200, "1"));
    assert_eq!(store.counts().touch, 1, "the refresh was tried");
    let seen = log.take();
    let errors = errors(&seen);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field("op"), Some("touch"));
    assert_eq!(errors[0].field("kind"), Some("unavailable"));
    assert!(
        errors[0]
            .field("message")
            .unwrap()
            .contains("answered anyway"),
        "{errors:?}"
    );
    let warnings = seen
        .iter()
        .filter(|s| s.kind == Kind::Event && s.level == tracing::Level::WARN)
        .count();
    assert_eq!(warnings, 0, "logged once, at ERROR");
}

#[tokio::test]
async fn registry_failures_are_logged_once_too() {
    let mut log = log();
    let store = TestStore::new(MemoryStore::new())
        .fail_when(|op| (op == Op::EndLinked).then(|| StoreError::unavailable("down (test)")));
    let registry = SessionLayer::new(store).registry();
    assert!(registry.end_all("user", "alice", None).await.is_err());
    let seen = log.take();
    let errors = errors(&seen);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field("op"), Some("end_linked"));
    assert_eq!(ops(&seen), [("end_linked".into(), "error".into())]);
}

// ---------------------------------------------------------------------------
// What is never logged
// ---------------------------------------------------------------------------

/// A whole request history, with failures and debug logging on: no span,
/// field or message holds a session id in full or an item's value.
#[tokio::test]
async fn no_session_id_and_no_item_value_is_ever_logged() {
    const SECRET: &str = "eyJhbGciOiJFZERTQSJ9.secret-token-value";
    let mut log = log();
    let (store, fail) = failing();
    let layer = SessionLayer::new(store.clone()).with_max_sessions_per_link("user", 1);
    let app = script_routes().layer(layer);
    let mut ids = Vec::new();

    let id = call(&app, &format!("set=token:{SECRET}&link=user:alice"), None)
        .await
        .new_id()
        .unwrap();
    ids.push(id.clone());
    call(&app, "get=token", Some(&cookie(&id))).await;
    let id2 = call(&app, &format!("set=token:{SECRET}&link=user:alice"), None)
        .await
        .new_id()
        .unwrap();
    ids.push(id2.clone());
    let id2b = call(&app, "cycle", Some(&cookie(&id2)))
        .await
        .new_id()
        .unwrap();
    ids.push(id2b.clone());
    for mode in [LOAD, SAVE, CREATE] {
        fail.store(mode, Ordering::SeqCst);
        call(&app, &format!("set=t2:{SECRET}"), Some(&cookie(&id2b))).await;
        call(&app, &format!("set=t2:{SECRET}"), None).await;
        fail.store(NONE, Ordering::SeqCst);
    }
    let made_up = made_up_id();
    ids.push(made_up.clone());
    call(&app, "get=token", Some(&cookie(&made_up))).await;
    call(&app, "destroy", Some(&cookie(&id2b))).await;

    let seen = log.take();
    assert!(
        store_spans(&seen).len() >= 8 && errors(&seen).len() >= 3,
        "the history was logged: {seen:#?}"
    );
    for s in &seen {
        let text = s.text();
        assert!(!text.contains(SECRET), "an item value in {s:?}");
        assert!(!text.contains("secret-token"), "an item value in {s:?}");
        for id in &ids {
            assert!(!text.contains(id.as_str()), "a whole session id in {s:?}");
            // Nor anything past the four characters `Debug` shows.
            assert!(!text.contains(&id[4..]), "most of a session id in {s:?}");
            assert!(!text.contains(&id[..8]), "more than the prefix in {s:?}");
        }
    }
}

/// Against a real `redis-server`: spans with `store = "redis"`, and a Redis
/// that died is one ERROR event per failed request, with the kind.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_outage_is_one_error_event_per_failure() {
    if !redis_support::available() {
        return;
    }
    let mut log = log();
    let mut server = redis_support::Redis::start();
    let store = tower_session_storage::RedisStore::connect(&server.url())
        .await
        .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    call(&app, "get=a", Some(&cookie(&id))).await;
    let seen = log.take();
    assert_eq!(
        ops(&seen),
        [
            ("create".to_owned(), "created".to_owned()),
            ("load".to_owned(), "found".to_owned())
        ]
    );
    assert!(store_spans(&seen)
        .iter()
        .all(|s| s.field("store") == Some("redis")));

    server.crash();
    assert_eq!(call(&app, "get=a", Some(&cookie(&id))).await.status, 503);
    let seen = log.take();
    let errors = errors(&seen);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field("store"), Some("redis"));
    assert_eq!(errors[0].field("op"), Some("load"));
    assert_eq!(errors[0].field("kind"), Some("unavailable"));
    assert!(!errors[0].text().contains(&id[4..]), "{errors:?}");
}

/// Review (issue 12): a Sentinel failover, logged with debug on (the
/// store's warnings, the resolution's rounds, one ERROR per failed
/// request): no session id beyond its prefix and no item value anywhere.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_sentinel_failover_logs_no_session_id_and_no_item_value() {
    use std::time::Instant;
    if !redis_support::available() {
        return;
    }
    const SECRET: &str = "secret-token-value-of-alice";
    let mut log = log();
    let mut set = redis_support::sentinel::SentinelSet::start();
    let store = tower_session_storage::RedisStore::connect_sentinel(
        &set.sentinel_urls(),
        redis_support::sentinel::MASTER,
    )
    .await
    .unwrap()
    .with_command_timeout(Duration::from_millis(500));
    let app = script_routes().layer(dev_layer(store));
    let mut ids = vec![call(&app, &format!("set=token:{SECRET}"), None)
        .await
        .new_id()
        .unwrap()];
    set.nodes_mut()[0].crash();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let id = ids.last().unwrap().clone();
        let r = call(
            &app,
            &format!("get=token&set=t2:{SECRET}"),
            Some(&cookie(&id)),
        )
        .await;
        if r.status == 200 {
            assert_eq!(r.body, SECRET);
            break;
        }
        failed += 1;
        assert!(Instant::now() < deadline, "no failover within a minute");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = call(&app, "cycle", Some(&cookie(ids.last().unwrap()))).await;
    ids.push(r.new_id().unwrap());
    let seen = log.take();
    assert!(
        failed > 0 && errors(&seen).len() >= failed,
        "the failover was logged: {failed} failed, {seen:#?}"
    );
    for s in &seen {
        let text = s.text();
        assert!(!text.contains("secret-token"), "an item value in {s:?}");
        for id in &ids {
            assert!(!text.contains(&id[4..]), "most of a session id in {s:?}");
            assert!(!text.contains(&id[..8]), "more than the prefix in {s:?}");
        }
    }
}
