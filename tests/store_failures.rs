//! Store failures (SECURITY.md #21) and bad records from a store (#22).
//! Statuses over real sockets; response extensions and logs in-process.
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::middleware::{from_fn, Next};
use axum::Router;
use common::*;
use tower_session_storage::store::{Record, Timestamp};
use tower_session_storage::{MemoryStore, SessionLayer, StoreError, StoreErrorKind};

// ---------------------------------------------------------------------------
// The rig: a memory store behind two fault switches
// ---------------------------------------------------------------------------

const OK: u8 = 0;
const UNAVAILABLE: u8 = 1;
const OTHER: u8 = 2;

/// The error a switch in `mode` makes: none, `StoreError::unavailable` or
/// `StoreError::other`.
fn check(mode: &AtomicU8) -> Option<StoreError> {
    match mode.load(Ordering::SeqCst) {
        OK => None,
        UNAVAILABLE => Some(StoreError::unavailable("connection refused")),
        _ => Some(StoreError::other("wrong type of value")),
    }
}

/// The pieces of one test: the switches, the counts, the memory behind them,
/// and how often the handler ran.
struct Rig {
    mem: MemoryStore,
    /// The switches: every load, every write fails in this mode.
    load: Arc<AtomicU8>,
    write: Arc<AtomicU8>,
    store: TestStore<MemoryStore>,
    handler_calls: Arc<AtomicUsize>,
    app: Router,
}

impl Rig {
    fn new() -> Self {
        Self::with(|l| l)
    }

    fn with(
        configure: impl FnOnce(
            SessionLayer<TestStore<MemoryStore>>,
        ) -> SessionLayer<TestStore<MemoryStore>>,
    ) -> Self {
        let mem = MemoryStore::new();
        let load = Arc::new(AtomicU8::new(OK));
        let write = Arc::new(AtomicU8::new(OK));
        let (l, w) = (load.clone(), write.clone());
        let store = TestStore::new(mem.clone()).fail_when(move |op| {
            if op.is_write() {
                check(&w)
            } else {
                check(&l)
            }
        });
        let handler_calls = Arc::new(AtomicUsize::new(0));
        let calls = handler_calls.clone();
        // Inside the session layer: counts the requests that reach the app.
        let app = script_routes()
            .layer(from_fn(move |req, next: Next| {
                calls.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            }))
            .layer(configure(dev_layer(store.clone())));
        Self {
            mem,
            load,
            write,
            store,
            handler_calls,
            app,
        }
    }

    /// From now on every load fails in `mode` (`OK`: none fails).
    fn fail_loads(&self, mode: u8) {
        self.load.store(mode, Ordering::SeqCst);
    }

    /// From now on every write fails in `mode` (`OK`: none fails).
    fn fail_writes(&self, mode: u8) {
        self.write.store(mode, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.handler_calls.load(Ordering::SeqCst)
    }

    async fn serve(&self) -> TestServer {
        TestServer::start(self.app.clone()).await
    }
}

// ---------------------------------------------------------------------------
// SECURITY.md #21: load failures
// ---------------------------------------------------------------------------

/// A load failure with a well-formed cookie: 503 (unavailable) or 500
/// (other), the handler is not called, no cookie; never a 200 with an empty
/// session that would look like a logout.
#[tokio::test]
async fn load_failure_is_a_5xx_and_the_handler_is_not_called() {
    let rig = Rig::new();
    let srv = rig.serve().await;
    let id = srv.raw("set=user:alice", None).await.new_id().unwrap();
    let c = cookie(&id);

    for (mode, status) in [(UNAVAILABLE, 503), (OTHER, 500)] {
        rig.fail_loads(mode);
        let calls = rig.calls();
        let r = srv.raw("get=user&set=x:1", Some(&c)).await;
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(rig.calls(), calls, "the handler ran without its session");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert!(!r.body.contains("alice") && r.body != "-", "{r:?}");
    }

    // Nothing was written meanwhile; with the store back, all is there.
    rig.fail_loads(OK);
    assert_eq!(srv.raw("get=user&get=x", Some(&c)).await.ok(), "alice,-");
}

/// The error goes into the response's extensions, for outer layers.
#[tokio::test]
async fn load_failure_puts_the_store_error_in_the_response_extensions() {
    use tower::ServiceExt;
    let rig = Rig::new();
    let id = call(&rig.app, "set=a:1", None).await.new_id().unwrap();
    for (mode, kind, status) in [
        (UNAVAILABLE, StoreErrorKind::Unavailable, 503),
        (OTHER, StoreErrorKind::Other, 500),
    ] {
        rig.fail_loads(mode);
        let req = http::Request::get("/s?get=a")
            .header("cookie", cookie(&id))
            .body(axum::body::Body::empty())
            .unwrap();
        let res = rig.app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status);
        let err = res
            .extensions()
            .get::<StoreError>()
            .expect("the StoreError in the extensions");
        assert_eq!(err.kind(), kind);
        assert_eq!(err.status(), status);
    }
}

/// Without a cookie (or with one that is not well-formed) nothing touches
/// the store, so a broken store does not break those requests.
#[tokio::test]
async fn requests_without_a_session_do_not_touch_a_failing_store() {
    let rig = Rig::new();
    let srv = rig.serve().await;
    rig.fail_loads(UNAVAILABLE);
    rig.fail_writes(UNAVAILABLE);
    for c in [None, Some("id=junk"), Some("theme=dark")] {
        let r = srv.raw("get=a&remove=a&clear", c).await;
        assert_eq!(r.ok(), "-,-", "{c:?}");
        if c == Some("id=junk") {
            // Not an id: cleared, without asking the store.
            assert!(r.expires_cookie() && r.set_cookies().len() == 1, "{r:?}");
        } else {
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }
    }
    assert_eq!(rig.store.counts(), Counts::default());
}

// ---------------------------------------------------------------------------
// SECURITY.md #21: save failures
// ---------------------------------------------------------------------------

/// A save failure replaces the handler's 200 with 503/500, with no cookie.
/// That holds for every kind of write: create, save, cycle, delete.
#[tokio::test]
async fn save_failure_replaces_the_response_with_a_5xx() {
    let rig = Rig::new();
    let srv = rig.serve().await;
    let id = srv.raw("set=a:1", None).await.new_id().unwrap();
    let c = cookie(&id);

    for (mode, status) in [(UNAVAILABLE, 503), (OTHER, 500)] {
        rig.fail_writes(mode);
        for (script, cookie) in [
            ("set=a:2", None),
            ("set=a:2", Some(c.as_str())),
            ("set=a:", Some(c.as_str())),
            ("cycle", Some(c.as_str())),
            ("destroy", Some(c.as_str())),
        ] {
            let calls = rig.calls();
            let r = srv.raw(script, cookie).await;
            assert_eq!(r.status, status, "{script}: {r:?}");
            assert_eq!(rig.calls(), calls + 1, "the handler did run");
            assert!(r.set_cookies().is_empty(), "{script}: {r:?}");
        }
        // A request that writes nothing needs no write: it still works.
        assert_eq!(srv.raw("get=a", Some(&c)).await.ok(), "1");
    }
    assert_eq!(rig.mem.len(), 1, "nothing created, nothing deleted");
}

/// SECURITY.md #37: an expiry refresh is best effort. A read-only request whose
/// refresh is due, on a store that refuses every write, answers the
/// handler's 200 with the session's data; the failed refresh is only logged.
/// With a persistent cookie, no refreshed `Set-Cookie` is sent for a refresh
/// that did not happen.
#[tokio::test(start_paused = true)]
async fn a_failed_expiry_refresh_never_turns_the_answer_into_a_5xx() {
    let rig = Rig::with(|l| {
        l.with_idle_timeout(Duration::from_secs(160))
            .with_persistent_cookie(true)
    });
    let id = call(&rig.app, "set=user:alice", None)
        .await
        .new_id()
        .unwrap();
    // Past the refresh step (a sixteenth of the idle timeout: 10 s).
    tokio::time::advance(Duration::from_secs(30)).await;
    for mode in [UNAVAILABLE, OTHER] {
        rig.fail_writes(mode);
        let touches = rig.store.counts().touch;
        let r = call(&rig.app, "get=user", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, "alice");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(
            rig.store.counts().touch,
            touches + 1,
            "the refresh was tried"
        );
    }
    // With the store back, the next read refreshes the session.
    rig.fail_writes(OK);
    let r = call(&rig.app, "get=user", Some(&cookie(&id))).await;
    assert_eq!(r.body, "alice");
    assert_eq!(r.id_named(NAME).as_deref(), Some(id.as_str()), "{r:?}");
}

/// When the store recovers, the same cookie works and the data is intact.
#[tokio::test]
async fn after_the_store_recovers_the_same_cookie_works() {
    let rig = Rig::new();
    let srv = rig.serve().await;
    let browser = srv.browser();
    let id = browser
        .run("set=user:alice&set=n:1")
        .await
        .new_id()
        .unwrap();

    rig.fail_loads(UNAVAILABLE);
    rig.fail_writes(UNAVAILABLE);
    assert_eq!(browser.run("incr=n").await.status, 503);
    rig.fail_loads(OK);
    assert_eq!(browser.run("incr=n").await.status, 503);
    rig.fail_writes(OK);

    let r = browser.run("get=user&incr=n&id").await;
    assert_eq!(r.ok(), format!("alice,2,{id}"), "data intact, same session");
    assert_eq!(
        srv.raw("get=n", Some(&cookie(&id))).await.ok(),
        "2",
        "and the write after the recovery was saved"
    );
}

/// A gRPC request gets a gRPC status instead: HTTP 200, `grpc-status` 14
/// (UNAVAILABLE) or 13 (INTERNAL), for load and for save failures.
#[tokio::test]
async fn grpc_requests_get_a_grpc_status() {
    let rig = Rig::new();
    let srv = rig.serve().await;
    let id = srv.raw("set=a:1", None).await.new_id().unwrap();

    let grpc = |script: &str, cookie: Option<&str>| {
        let mut req = raw_client()
            .post(srv.url(&format!("/s?{script}")))
            .header("content-type", "application/grpc+proto")
            .header("te", "trailers");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        send(req)
    };

    for (mode, code) in [(UNAVAILABLE, "14"), (OTHER, "13")] {
        rig.fail_loads(mode);
        let calls = rig.calls();
        let r = grpc("get=a", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.headers["grpc-status"], code, "{r:?}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/grpc"),
            "{r:?}"
        );
        assert!(r.headers.contains_key("grpc-message"), "{r:?}");
        assert_eq!(rig.calls(), calls, "the handler was called");
        rig.fail_loads(OK);

        rig.fail_writes(mode);
        let r = grpc("set=a:2", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.headers["grpc-status"], code, "{r:?}");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        rig.fail_writes(OK);
    }
    // A plain request on the same path still gets plain statuses.
    rig.fail_loads(UNAVAILABLE);
    let r = srv.raw("get=a", Some(&cookie(&id))).await;
    assert_eq!(r.status, 503);
    assert!(!r.headers.contains_key("grpc-status"), "{r:?}");
}

/// Store failures are logged: an ERROR event from this crate. In-process, on
/// a current-thread runtime, with a capturing subscriber for this thread.
#[tokio::test]
async fn store_failures_are_logged() {
    let rig = Rig::new();
    let id = call(&rig.app, "set=a:1", None).await.new_id().unwrap();
    // A process-wide subscriber (set once, before this test's events), so no
    // other test thread can leave the callsites' interest cached as "never";
    // it counts only events from this test's thread.
    static ERRORS: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
    let errors = ERRORS
        .get_or_init(|| {
            let errors = Arc::new(AtomicUsize::new(0));
            let counter = ErrorCounter(errors.clone(), std::thread::current().id());
            tracing::subscriber::set_global_default(counter).unwrap();
            errors
        })
        .clone();

    rig.fail_loads(UNAVAILABLE);
    assert_eq!(
        call(&rig.app, "get=a", Some(&cookie(&id))).await.status,
        503
    );
    assert_eq!(errors.load(Ordering::SeqCst), 1, "a load failure is logged");
    rig.fail_loads(OK);

    rig.fail_writes(OTHER);
    assert_eq!(
        call(&rig.app, "set=a:2", Some(&cookie(&id))).await.status,
        500
    );
    assert_eq!(errors.load(Ordering::SeqCst), 2, "a save failure is logged");
}

/// Counts ERROR events from `tower_session_storage`.
struct ErrorCounter(Arc<AtomicUsize>, std::thread::ThreadId);

impl tracing::Subscriber for ErrorCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let m = event.metadata();
        if *m.level() == tracing::Level::ERROR
            && m.target().starts_with("tower_session_storage")
            && std::thread::current().id() == self.1
        {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

// ---------------------------------------------------------------------------
// SECURITY.md #22: records a store should never return
// ---------------------------------------------------------------------------

/// The times a doctored store puts into every record it loads:
/// `(created_at, expires_at)` in ms since the epoch; `None`: as stored.
type Times = Arc<Mutex<Option<(u64, u64)>>>;

/// A memory store whose loads return a doctored copy of the record, the way
/// a store with stale or corrupted times would; and the switch that sets
/// the times.
fn doctored() -> (TestStore<MemoryStore>, Times) {
    let times = Times::default();
    let set = times.clone();
    let store = TestStore::new(MemoryStore::new()).map_loads(move |r| {
        Some(match *set.lock().unwrap() {
            Some((created_at, expires_at)) => Record {
                created_at: Timestamp::from_millis(created_at),
                expires_at: Timestamp::from_millis(expires_at),
                ..r
            },
            None => r,
        })
    });
    (store, times)
}

/// Wall-clock ms since the Unix epoch (the crate's clock, unpaused).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

const HOUR: u64 = 3600 * 1000;
const DAY: u64 = 24 * HOUR;

/// Loads `times` for a live session; asserts it is treated as absent (a
/// fresh session), deleted, and that a write gets a new id.
async fn assert_treated_as_absent(times: impl Fn(u64) -> (u64, u64), absolute: Option<Duration>) {
    let (store, doctored) = doctored();
    let mut layer = dev_layer(store.clone());
    if let Some(a) = absolute {
        layer = layer.with_absolute_timeout(a);
    }
    let srv = serve_script(layer).await;
    let id = srv.raw("set=a:1", None).await.new_id().unwrap();

    *doctored.lock().unwrap() = Some(times(now_ms()));
    let deletes = store.counts().delete;
    let r = srv.raw("get=a&id", Some(&cookie(&id))).await;
    assert_eq!(r.ok(), "-,-", "the bad record was used");
    assert_eq!(
        store.counts().delete,
        deletes + 1,
        "the bad record was not deleted"
    );
    assert_eq!(store.inner().len(), 0);

    let r = srv.raw("set=a:2", Some(&cookie(&id))).await;
    assert_ne!(r.new_id().unwrap(), id);
}

#[tokio::test]
async fn record_already_expired_is_treated_as_absent_and_deleted() {
    assert_treated_as_absent(|now| (now - HOUR, now - 60_000), None).await;
    // Just expired. The layer's clock is the Unix time read once, advanced
    // by a monotonic clock, so it may differ from `SystemTime::now()` by a
    // few milliseconds: keep a margin of a second.
    assert_treated_as_absent(|now| (now - HOUR, now - 1_000), None).await;
    assert_treated_as_absent(|_| (0, 0), None).await;
}

#[tokio::test]
async fn record_past_the_absolute_timeout_is_treated_as_absent_and_deleted() {
    assert_treated_as_absent(
        |now| (now - 10 * DAY, now + HOUR),
        Some(Duration::from_secs(24 * 3600)),
    )
    .await;
}

/// A record created after it expires cannot come from a correct store (its
/// expiry only moves forward from creation): the layer should treat it as
/// corrupted. Created a day in the future (far beyond clock skew), expiring
/// in an hour.
#[tokio::test]
async fn record_created_after_it_expires_is_treated_as_absent_and_deleted() {
    assert_treated_as_absent(|now| (now + DAY, now + HOUR), None).await;
    assert_treated_as_absent(
        |now| (now + DAY, now + HOUR),
        Some(Duration::from_secs(8 * 3600)),
    )
    .await;
}

/// Absurd times never panic the layer (no overflow in its arithmetic), with
/// or without an absolute timeout and a persistent cookie.
#[tokio::test]
async fn absurd_stored_times_never_panic() {
    for absolute in [None, Some(Duration::from_secs(3600))] {
        for times in [(u64::MAX, u64::MAX), (u64::MAX, 0), (0, u64::MAX), (1, 2)] {
            let (store, doctored) = doctored();
            let mut layer = dev_layer(store).with_persistent_cookie(true);
            if let Some(a) = absolute {
                layer = layer.with_absolute_timeout(a);
            }
            let srv = serve_script(layer).await;
            let id = srv.raw("set=a:1", None).await.new_id().unwrap();
            *doctored.lock().unwrap() = Some(times);
            for script in ["get=a", "set=b:1", "cycle", "destroy"] {
                let r = srv.raw(script, Some(&cookie(&id))).await;
                assert_eq!(r.status, 200, "{times:?} {script}: {r:?}");
            }
        }
    }
}

/// A store that finds a record it cannot read deletes it and reports
/// `Ok(None)` (the trait's contract): the layer then gives a fresh session.
#[tokio::test]
async fn unreadable_record_reported_as_absent_gives_a_fresh_session() {
    let mem = MemoryStore::new();
    let srv = serve_script(dev_layer(TestStore::new(mem.clone()).map_loads(|_| None))).await;
    let id = srv.raw("set=a:1", None).await.new_id().unwrap();
    let r = srv.raw("get=a", Some(&cookie(&id))).await;
    assert_eq!(r.ok(), "-");
    assert_eq!(mem.len(), 0);
    let r = srv.raw("set=a:2", Some(&cookie(&id))).await;
    assert_ne!(r.new_id().unwrap(), id);
}
