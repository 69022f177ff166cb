//! The `metrics` feature: every counter, the histogram and the gauge, read
//! back with `metrics-util`'s `DebuggingRecorder` installed for the test's
//! thread (each test runs on a current-thread runtime, so the layer, the
//! stores and the handlers all record into that test's recorder).
#![allow(clippy::unwrap_used)]

#[macro_use]
#[allow(unused_macros)]
mod common;
#[cfg(feature = "redis")]
mod redis_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::*;
use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use tower_session_storage::store::{Items, Meta, Record, Timestamp};
use tower_session_storage::{MemoryStore, PublicId, SessionLayer, SessionStore, StoreError};

// ---------------------------------------------------------------------------
// Reading the recorder
// ---------------------------------------------------------------------------

/// One metric: its kind, name and labels (sorted).
type Id = (MetricKind, String, Vec<(String, String)>);

/// Everything recorded so far. A snapshot of the debugging recorder takes
/// (zeroes) counters and gauges and drains histograms, so every reading is
/// added to what earlier readings saw.
struct Seen {
    snapshotter: Snapshotter,
    counters: HashMap<Id, u64>,
    gauges: HashMap<Id, f64>,
    histograms: HashMap<Id, Vec<f64>>,
    units: HashMap<String, Unit>,
    descriptions: HashMap<String, String>,
}

impl Seen {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            counters: HashMap::new(),
            gauges: HashMap::new(),
            histograms: HashMap::new(),
            units: HashMap::new(),
            descriptions: HashMap::new(),
        }
    }

    fn read(&mut self) -> &mut Self {
        for (key, unit, description, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let name = key.name().to_owned();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            if let Some(unit) = unit {
                self.units.insert(name.clone(), unit);
            }
            if let Some(d) = description {
                self.descriptions.insert(name.clone(), d.to_string());
            }
            let id = (kind, name, labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(id).or_default() += n,
                DebugValue::Gauge(g) => *self.gauges.entry(id).or_default() += g.into_inner(),
                DebugValue::Histogram(v) => self
                    .histograms
                    .entry(id)
                    .or_default()
                    .extend(v.into_iter().map(|f| f.into_inner())),
            }
        }
        self
    }

    /// The sum of the counter `name` over the series that carry `labels`.
    fn counter(&mut self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.read();
        self.counters
            .iter()
            .filter(|((_, n, l), _)| n == name && has(l, labels))
            .map(|(_, v)| *v)
            .sum()
    }

    /// The gauge `name` (one series).
    fn gauge(&mut self, name: &str) -> f64 {
        self.read();
        self.gauges
            .iter()
            .filter(|((_, n, _), _)| n == name)
            .map(|(_, v)| *v)
            .sum()
    }

    /// The samples of the histogram `name` in the series that carry `labels`.
    fn samples(&mut self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.read();
        self.histograms
            .iter()
            .filter(|((_, n, l), _)| n == name && has(l, labels))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }

    /// Every label set seen for `name`.
    fn label_sets(&mut self, name: &str) -> Vec<Vec<(String, String)>> {
        self.read();
        let c = self.counters.keys();
        let h = self.histograms.keys();
        c.chain(h)
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, l)| l.clone())
            .collect()
    }
}

fn has(labels: &[(String, String)], wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

const LOADS: &str = "session_loads_total";
const CREATED: &str = "session_created_total";
const SAVED: &str = "session_saved_total";
const CYCLED: &str = "session_cycled_total";
const DESTROYED: &str = "session_destroyed_total";
const ENDED: &str = "session_ended_total";
const REFRESHED: &str = "session_refreshed_total";
const ERRORS: &str = "session_store_errors_total";
const DURATION: &str = "session_store_operation_duration_seconds";
const RECLAIMED: &str = "session_memory_reclaimed_total";
const REFUSED: &str = "session_memory_refused_total";
const SESSIONS: &str = "session_memory_sessions";

// ---------------------------------------------------------------------------
// A store whose loads the test can doctor, and whose calls it can fail
// ---------------------------------------------------------------------------

/// What loads return: as stored, expired by the layer's policy, or due a
/// refresh.
const AS_STORED: u8 = 0;
const EXPIRED: u8 = 1;
const DUE_REFRESH: u8 = 2;

/// Which operation fails (with `Unavailable`, `Other` for saves).
const NONE: u8 = 0;
const LOAD: u8 = 1;
const SAVE: u8 = 2;
const TOUCH: u8 = 3;
const LIST: u8 = 4;

struct Rig {
    app: Router,
    store: TestStore<MemoryStore>,
    loads: Arc<AtomicU8>,
    fail: Arc<AtomicU8>,
}

impl Rig {
    fn new(max_sessions: usize) -> Self {
        let loads = Arc::new(AtomicU8::new(AS_STORED));
        let fail = Arc::new(AtomicU8::new(NONE));
        let (l, f) = (loads.clone(), fail.clone());
        let store = TestStore::new(MemoryStore::new().with_max_sessions(max_sessions))
            .map_loads(move |mut r| {
                let now = Timestamp::now();
                match l.load(Ordering::SeqCst) {
                    EXPIRED => r.expires_at = now.saturating_sub(Duration::from_secs(1)),
                    DUE_REFRESH => r.expires_at = now.saturating_add(Duration::from_secs(10)),
                    _ => {}
                }
                Some(r)
            })
            .fail_when(move |op| match (f.load(Ordering::SeqCst), op) {
                (LOAD, Op::Load) => Some(StoreError::unavailable("down for the test")),
                (SAVE, Op::Save) => Some(StoreError::other("broken for the test")),
                (TOUCH, Op::Touch) => Some(StoreError::unavailable("down for the test")),
                (LIST, Op::List) => Some(StoreError::unavailable("down for the test")),
                _ => None,
            });
        let layer = SessionLayer::new(store.clone()).with_max_sessions_per_link("user", 1);
        Self {
            app: script_routes().layer(layer),
            store,
            loads,
            fail,
        }
    }

    async fn new_session(&self, script: &str) -> String {
        let r = call(&self.app, script, None).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.new_id().unwrap()
    }
}

// ---------------------------------------------------------------------------
// The lifecycle's counters
// ---------------------------------------------------------------------------

#[tokio::test]
async fn every_session_event_is_counted() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let rig = Rig::new(1000);

    // A request without a cookie that writes nothing touches nothing.
    assert_eq!(call(&rig.app, "get=a", None).await.body, "-");
    assert_eq!(seen.counter(LOADS, &[]), 0);

    let id = rig.new_session("set=a:1").await;
    assert_eq!(seen.counter(CREATED, &[]), 1);

    assert_eq!(call(&rig.app, "get=a", Some(&cookie(&id))).await.body, "1");
    assert_eq!(seen.counter(LOADS, &[("outcome", "found")]), 1);

    call(&rig.app, "set=a:2", Some(&cookie(&id))).await;
    assert_eq!(seen.counter(SAVED, &[]), 1);
    assert_eq!(seen.counter(LOADS, &[("outcome", "found")]), 2);

    // An id the store does not know.
    call(&rig.app, "get=a", Some(&cookie(&made_up_id()))).await;
    assert_eq!(seen.counter(LOADS, &[("outcome", "not_found")]), 1);

    // cycle_id: one cycle, no create, no save.
    let cycled = call(&rig.app, "cycle", Some(&cookie(&id))).await;
    let id = cycled.new_id().unwrap();
    assert_eq!(seen.counter(CYCLED, &[]), 1);
    assert_eq!(seen.counter(CREATED, &[]), 1);
    assert_eq!(seen.counter(SAVED, &[]), 1);

    // A read that finds the session due a refresh writes only the expiry.
    rig.loads.store(DUE_REFRESH, Ordering::SeqCst);
    call(&rig.app, "get=a", Some(&cookie(&id))).await;
    rig.loads.store(AS_STORED, Ordering::SeqCst);
    assert_eq!(seen.counter(REFRESHED, &[]), 1);

    // A session past its timeout on load: counted as expired (and deleted).
    let old = rig.new_session("set=a:1").await;
    rig.loads.store(EXPIRED, Ordering::SeqCst);
    assert_eq!(call(&rig.app, "get=a", Some(&cookie(&old))).await.body, "-");
    rig.loads.store(AS_STORED, Ordering::SeqCst);
    assert_eq!(seen.counter(LOADS, &[("outcome", "expired")]), 1);
    assert_eq!(rig.store.counts().delete, 1);

    // destroy(), and a request that removes the last item: both end the
    // session by its own request.
    call(&rig.app, "destroy", Some(&cookie(&id))).await;
    assert_eq!(seen.counter(DESTROYED, &[]), 1);
    let emptied = rig.new_session("set=a:1").await;
    let r = call(&rig.app, "remove=a", Some(&cookie(&emptied))).await;
    assert!(r.expires_cookie(), "{r:?}");
    assert_eq!(seen.counter(DESTROYED, &[]), 2);

    assert_eq!(seen.counter(CREATED, &[]), 3);
    assert_eq!(seen.counter(ERRORS, &[]), 0, "nothing failed");
    // Every label the loads counter carries is one of the three outcomes.
    for labels in seen.label_sets(LOADS) {
        let outcome = &labels[0].1;
        assert!(
            labels.len() == 1 && ["found", "not_found", "expired"].contains(&outcome.as_str()),
            "{labels:?}"
        );
    }
}

#[tokio::test]
async fn sessions_ended_by_the_registry_and_by_a_link_cap_are_counted() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let rig = Rig::new(1000);

    // The cap on `user` is 1: the second sign-in ends the first session.
    let first = rig.new_session("link=user:alice&set=a:1").await;
    let _second = rig.new_session("link=user:alice&set=a:1").await;
    assert_eq!(seen.counter(ENDED, &[("by", "link_cap")]), 1);
    let r = call(&rig.app, "get=a", Some(&cookie(&first))).await;
    assert_eq!(r.body, "-", "the first session was ended");

    let bob1 = rig.new_session("link=device:bob&set=a:1").await;
    rig.new_session("link=device:bob&set=a:1").await;
    rig.new_session("link=device:bob&set=a:1").await;
    let r = call(&rig.app, "endothers=device:bob", Some(&cookie(&bob1))).await;
    assert_eq!(r.body, "2");
    assert_eq!(seen.counter(ENDED, &[("by", "registry")]), 2);
    let pid = call(&rig.app, "pid", Some(&cookie(&bob1))).await.body;
    let other = rig.new_session("set=a:1").await;
    assert_eq!(
        call(&rig.app, &format!("end={pid}"), Some(&cookie(&other)))
            .await
            .body,
        "true"
    );
    assert_eq!(seen.counter(ENDED, &[("by", "registry")]), 3);
    // Ending nothing counts nothing.
    call(&rig.app, "endall=device:nobody", Some(&cookie(&other))).await;
    assert_eq!(seen.counter(ENDED, &[]), 4);
    // Not a logout by the session's own request.
    assert_eq!(seen.counter(DESTROYED, &[]), 0);
}

// ---------------------------------------------------------------------------
// Store failures, and the histogram
// ---------------------------------------------------------------------------

#[tokio::test]
async fn store_errors_are_counted_by_operation_store_and_kind() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let rig = Rig::new(1000);
    let id = rig.new_session("link=user:carol&set=a:1").await;

    rig.fail.store(LOAD, Ordering::SeqCst);
    assert_eq!(
        call(&rig.app, "get=a", Some(&cookie(&id))).await.status,
        503
    );
    rig.fail.store(SAVE, Ordering::SeqCst);
    assert_eq!(
        call(&rig.app, "set=a:2", Some(&cookie(&id))).await.status,
        500
    );
    // A failed refresh is a store error too, though the request succeeds.
    rig.fail.store(TOUCH, Ordering::SeqCst);
    rig.loads.store(DUE_REFRESH, Ordering::SeqCst);
    assert_eq!(
        call(&rig.app, "get=a", Some(&cookie(&id))).await.status,
        200
    );
    rig.loads.store(AS_STORED, Ordering::SeqCst);
    rig.fail.store(NONE, Ordering::SeqCst);

    // A test store keeps the trait's default name: "custom".
    assert_eq!(rig.store.name(), "custom");
    let store = ("store", "custom");
    assert_eq!(
        seen.counter(ERRORS, &[("op", "load"), store, ("kind", "unavailable")]),
        1
    );
    assert_eq!(
        seen.counter(ERRORS, &[("op", "save"), store, ("kind", "other")]),
        1
    );
    assert_eq!(
        seen.counter(ERRORS, &[("op", "touch"), store, ("kind", "unavailable")]),
        1
    );
    assert_eq!(seen.counter(ERRORS, &[]), 3);
    assert_eq!(seen.counter(REFRESHED, &[]), 0, "the refresh failed");
    assert_eq!(seen.counter(SAVED, &[]), 0, "the save failed");

    // A registry call that fails.
    let registry = SessionLayer::new(rig.store.clone()).registry();
    rig.fail.store(LIST, Ordering::SeqCst);
    assert!(registry.list("user", "carol").await.is_err());
    rig.fail.store(NONE, Ordering::SeqCst);
    assert_eq!(
        seen.counter(ERRORS, &[("op", "list"), store, ("kind", "unavailable")]),
        1
    );

    // Every label set of the error counter has exactly op, store, kind.
    for labels in seen.label_sets(ERRORS) {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["kind", "op", "store"], "{labels:?}");
    }
}

#[tokio::test]
async fn every_store_operation_is_timed_by_operation_and_store() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let store = MemoryStore::new();
    let app = script_routes().layer(SessionLayer::new(store.clone()));

    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    for _ in 0..3 {
        call(&app, "get=a", Some(&cookie(&id))).await;
    }
    call(&app, "set=a:2", Some(&cookie(&id))).await;
    let registry = SessionLayer::new(store.clone()).registry();
    registry.list("user", "nobody").await.unwrap();

    let memory = ("store", "memory");
    assert_eq!(seen.samples(DURATION, &[("op", "create"), memory]).len(), 1);
    assert_eq!(seen.samples(DURATION, &[("op", "load"), memory]).len(), 4);
    assert_eq!(seen.samples(DURATION, &[("op", "save"), memory]).len(), 1);
    assert_eq!(seen.samples(DURATION, &[("op", "list"), memory]).len(), 1);
    let all = seen.samples(DURATION, &[]);
    assert_eq!(all.len(), 7, "one sample per store call, no more");
    assert!(all.iter().all(|s| s.is_finite() && *s >= 0.0), "{all:?}");
    for labels in seen.label_sets(DURATION) {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["op", "store"], "{labels:?}");
    }
}

/// A network store's answer (a pending future) is timed to its answer and
/// recorded once.
#[tokio::test]
async fn a_pending_store_call_is_timed_once() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let store = TestStore::new(MemoryStore::new()).delay(Duration::from_millis(20));
    let app = script_routes().layer(SessionLayer::new(store));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    call(&app, "get=a", Some(&cookie(&id))).await;
    let load = seen.samples(DURATION, &[("op", "load"), ("store", "custom")]);
    assert_eq!(load.len(), 1);
    // The sample spans the store's wait (a lower bound, not a timing
    // assertion: the store sleeps 20 ms before it answers).
    assert!(load[0] >= 0.020, "{load:?}");
    assert_eq!(seen.counter(CREATED, &[]), 1);
    assert_eq!(seen.counter(LOADS, &[("outcome", "found")]), 1);
}

// ---------------------------------------------------------------------------
// The memory store's own metrics
// ---------------------------------------------------------------------------

/// A record of ours, expiring at `expires_at`.
fn record(expires_at: Timestamp) -> Record {
    let mut items = Items::new();
    items.insert("a", "1");
    Record {
        items,
        created_at: Timestamp::now().saturating_sub(Duration::from_secs(60)),
        expires_at,
        public_id: PublicId::generate(),
        meta: Meta::new(),
    }
}

#[tokio::test]
async fn the_memory_store_counts_refusals_reclamations_and_its_sessions() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let store = MemoryStore::new().with_max_sessions(2);
    let app = script_routes().layer(SessionLayer::new(store.clone()));

    let a = call(&app, "set=a:1", None).await.new_id().unwrap();
    call(&app, "set=a:1", None).await.new_id().unwrap();
    assert_eq!(seen.gauge(SESSIONS), 2.0);

    // Full: a new session is refused (503), existing ones still work.
    assert_eq!(call(&app, "set=a:1", None).await.status, 503);
    assert_eq!(seen.counter(REFUSED, &[]), 1);
    assert_eq!(
        seen.counter(
            ERRORS,
            &[("op", "create"), ("store", "memory"), ("kind", "full")]
        ),
        1
    );
    assert_eq!(call(&app, "get=a", Some(&cookie(&a))).await.body, "1");
    assert_eq!(seen.gauge(SESSIONS), 2.0);

    // Two sessions that expired: the store reclaims them by itself (the
    // next operation sweeps what is due).
    store.set_max_sessions(4);
    let past = Timestamp::now().saturating_sub(Duration::from_secs(5));
    let (x, y) = (parse_id(&made_up_id()), parse_id(&made_up_id()));
    assert!(store.create(&x, &record(past)).await.unwrap());
    assert!(store.create(&y, &record(past)).await.unwrap());
    assert_eq!(seen.gauge(SESSIONS), 4.0);
    assert!(store.load(&x, Timestamp::now()).await.unwrap().is_none());
    assert_eq!(call(&app, "set=a:1", None).await.status, 200);
    assert_eq!(seen.counter(RECLAIMED, &[]), 2);
    assert_eq!(seen.counter(REFUSED, &[]), 1, "room was made: not refused");
    assert_eq!(store.len(), 3);
    assert_eq!(seen.gauge(SESSIONS), 3.0, "the gauge follows the store");

    // A logout gives its place back.
    call(&app, "destroy", Some(&cookie(&a))).await;
    assert_eq!(store.len(), 2);
    assert_eq!(seen.gauge(SESSIONS), 2.0);
}

#[tokio::test]
async fn describe_metrics_gives_every_metric_a_unit_and_a_description() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    tower_session_storage::describe_metrics();
    let store = MemoryStore::new().with_max_sessions(1);
    let app = script_routes().layer(SessionLayer::new(store));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    call(&app, "get=a", Some(&cookie(&id))).await;
    assert_eq!(call(&app, "set=a:1", None).await.status, 503);
    seen.read();
    for (name, unit) in [
        (CREATED, Unit::Count),
        (LOADS, Unit::Count),
        (ERRORS, Unit::Count),
        (REFUSED, Unit::Count),
        (SESSIONS, Unit::Count),
        (DURATION, Unit::Seconds),
    ] {
        assert_eq!(seen.units.get(name), Some(&unit), "{name}");
        assert!(
            seen.descriptions.get(name).is_some_and(|d| !d.is_empty()),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// A real Redis
// ---------------------------------------------------------------------------

/// Against a real `redis-server`: the store label is `redis`, every call
/// is timed to Redis's answer, and a Redis that died is counted as
/// `unavailable` load errors (each request answered 503).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_store_is_labelled_timed_and_its_outage_counted() {
    if !redis_support::available() {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let mut server = redis_support::Redis::start();
    let store = tower_session_storage::RedisStore::connect(&server.url())
        .await
        .unwrap();
    let app = script_routes().layer(dev_layer(store));
    let id = call(&app, "set=a:1", None).await.new_id().unwrap();
    assert_eq!(call(&app, "get=a", Some(&cookie(&id))).await.ok(), "1");
    call(&app, "set=a:2", Some(&cookie(&id))).await;
    let redis = ("store", "redis");
    assert_eq!(seen.samples(DURATION, &[("op", "create"), redis]).len(), 1);
    assert_eq!(seen.samples(DURATION, &[("op", "load"), redis]).len(), 2);
    assert_eq!(seen.samples(DURATION, &[("op", "save"), redis]).len(), 1);
    assert_eq!(seen.counter(CREATED, &[]), 1);
    assert_eq!(seen.counter(SAVED, &[]), 1);
    assert_eq!(seen.counter(LOADS, &[("outcome", "found")]), 2);

    server.crash();
    for _ in 0..2 {
        assert_eq!(call(&app, "get=a", Some(&cookie(&id))).await.status, 503);
    }
    assert_eq!(
        seen.counter(ERRORS, &[("op", "load"), redis, ("kind", "unavailable")]),
        2
    );
    assert_eq!(seen.samples(DURATION, &[("op", "load"), redis]).len(), 4);
    assert_eq!(seen.counter(LOADS, &[]), 2, "a failed load is no outcome");
}

/// Review (issue 12): the sessions gauge after churn. Sign-in, `cycle_id`,
/// a write racing a logout, a request on the old id, expired sessions swept
/// by later operations: after each round the gauge is the store's length.
/// A dropped store no longer holds its sessions: the gauge gives them back.
#[tokio::test]
async fn the_sessions_gauge_follows_churn_expiry_and_a_dropped_store() {
    let recorder = DebuggingRecorder::new();
    let _local = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::new(&recorder);
    let store = MemoryStore::new();
    let app = script_routes().layer(SessionLayer::new(store.clone()));
    for round in 0..100 {
        let id = call(&app, "set=user:a", None).await.new_id().unwrap();
        let r = call(&app, "cycle&set=n:1", Some(&cookie(&id))).await;
        let new = r.new_id().unwrap();
        let (a, b) = (app.clone(), app.clone());
        let c = cookie(&new);
        let c2 = c.clone();
        let write = async move { call(&a, "set=x:1", Some(&c)).await };
        let logout = async move { call(&b, "destroy", Some(&c2)).await };
        tokio::join!(write, logout);
        call(&app, "get=user", Some(&cookie(&id))).await;
        if round % 10 == 0 {
            let past = Timestamp::now().saturating_sub(Duration::from_secs(5));
            let x = parse_id(&made_up_id());
            assert!(store.create(&x, &record(past)).await.unwrap());
        }
        assert_eq!(seen.gauge(SESSIONS), store.len() as f64, "round {round}");
    }
    assert_eq!(seen.gauge(SESSIONS), store.len() as f64);
    drop(app);
    drop(store);
    assert_eq!(seen.gauge(SESSIONS), 0.0, "a dropped store's sessions");
}
