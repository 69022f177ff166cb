//! What an operator sees: one `tracing` span per store operation, one
//! `ERROR` event per store failure, and (feature `metrics`) counters, a
//! histogram and a gauge through the [`metrics`](https://docs.rs/metrics)
//! facade.
//!
//! The lifecycle (`load.rs`, `persist.rs`, `registry.rs`) calls the store
//! through [`watch`], and reports what happened to a session through the
//! small functions below. The memory store reports its own reclamations,
//! refusals and size.
//!
//! Without the `metrics` feature, and with `DEBUG` off for this target (no
//! subscriber, or one at `INFO`), [`watch`] is one level check and a
//! direct call, and every counter function is empty: nothing is timed,
//! boxed or allocated.
//!
//! Nothing here ever records a session id or an item: the fields are the
//! operation, the store's [`name`](crate::SessionStore::name), the outcome,
//! the duration and the error's kind and text.

use std::time::Instant;

use tracing::field::Empty;
use tracing::Instrument;

use crate::error::{Chain, StoreError, StoreErrorKind};
use crate::store::{CycleOutcome, Listed, Record, SaveOutcome, SessionStore, StoreFuture};

/// The `tracing` target of the store spans and failure events.
pub(crate) const TARGET: &str = "tower_session_storage::telemetry";

/// A store operation, as spans and metrics name it (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    Create,
    Save,
    Cycle,
    Delete,
    End,
    Touch,
    List,
    EndLinked,
    EndPublic,
}

impl Op {
    /// The `op` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Create => "create",
            Op::Save => "save",
            Op::Cycle => "cycle",
            Op::Delete => "delete",
            Op::End => "end",
            Op::Touch => "touch",
            Op::List => "list",
            Op::EndLinked => "end_linked",
            Op::EndPublic => "end_public",
        }
    }

    /// The message of this operation's failure event: what failed, and
    /// what the layer did about it.
    fn failure(self) -> &'static str {
        match self {
            Op::Load => "session store failed to load a session; answered with an error",
            Op::Create => "session store failed to create a session; answered with an error",
            Op::Save => "session store failed to save a session; answered with an error",
            Op::Cycle => {
                "session store failed to move a session to a new id; answered with an error"
            }
            Op::Delete => "session store failed to delete an expired session; treated as absent",
            Op::End => "session store failed to end a session; answered with an error",
            Op::Touch => {
                "session store failed to refresh a session's expiry; answered anyway \
                 (the session may expire early)"
            }
            Op::List => "session store failed to list linked sessions",
            Op::EndLinked => "session store failed to end linked sessions",
            Op::EndPublic => "session store failed to end a session by its public id",
        }
    }
}

/// The `kind` label of a store error.
pub(crate) fn kind_str(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::Full => "full",
        StoreErrorKind::Other => "other",
    }
}

/// A store answer's `outcome` field.
pub(crate) trait Answer {
    fn outcome(&self, op: Op) -> &'static str;
}

impl Answer for Option<Record> {
    fn outcome(&self, _: Op) -> &'static str {
        if self.is_some() {
            "found"
        } else {
            "not_found"
        }
    }
}

impl Answer for bool {
    fn outcome(&self, op: Op) -> &'static str {
        match (op, *self) {
            (Op::Create, true) => "created",
            (Op::Create, false) => "taken",
            (Op::Touch, true) => "refreshed",
            (Op::EndPublic, true) => "ended",
            (Op::EndPublic, false) => "not_found",
            (_, true) => "ok",
            (_, false) => "gone",
        }
    }
}

impl Answer for () {
    fn outcome(&self, _: Op) -> &'static str {
        "ok"
    }
}

impl Answer for usize {
    fn outcome(&self, _: Op) -> &'static str {
        "ok"
    }
}

impl Answer for Vec<Listed> {
    fn outcome(&self, _: Op) -> &'static str {
        "ok"
    }
}

impl Answer for SaveOutcome {
    fn outcome(&self, _: Op) -> &'static str {
        match self {
            SaveOutcome::Saved => "saved",
            SaveOutcome::Deleted => "deleted",
            SaveOutcome::Gone => "gone",
        }
    }
}

impl Answer for CycleOutcome {
    fn outcome(&self, _: Op) -> &'static str {
        match self {
            CycleOutcome::Moved => "moved",
            CycleOutcome::Deleted => "deleted",
            CycleOutcome::Gone => "gone",
            CycleOutcome::Collision => "collision",
        }
    }
}

/// Whether store operations are timed even when no span is: the histogram
/// needs the duration.
const TIMED: bool = cfg!(feature = "metrics");

/// Calls the store (`call` makes the operation's future) inside a `DEBUG`
/// span `session_store` with the fields `op`, `store`, `outcome` and
/// `duration_us`, and records the operation's duration in the histogram.
///
/// A ready answer (an in-process store) is finished here; a network
/// store's future is wrapped (instrumented with the span, timed to its
/// answer). When neither the span nor the histogram is wanted, this is
/// `call()`.
#[inline(always)]
pub(crate) fn watch<S, T>(
    op: Op,
    store: &S,
    call: impl FnOnce() -> StoreFuture<T>,
) -> StoreFuture<T>
where
    S: SessionStore + ?Sized,
    T: Answer + Send + 'static,
{
    // No subscriber wants DEBUG from anything (one atomic load): the call
    // itself, nothing else.
    if !TIMED && !tracing::level_enabled!(tracing::Level::DEBUG) {
        return call();
    }
    // The field values are only evaluated when the span is enabled.
    let span = tracing::debug_span!(
        target: TARGET,
        "session_store",
        op = op.as_str(),
        store = store.name(),
        outcome = Empty,
        duration_us = Empty,
    );
    if !TIMED && span.is_disabled() {
        return call();
    }
    watched(op, store.name(), span, call)
}

/// [`watch`] when the operation is observed. Out of line, so that the
/// callers keep only the check.
#[inline(never)]
fn watched<T: Answer + Send + 'static>(
    op: Op,
    name: &'static str,
    span: tracing::Span,
    call: impl FnOnce() -> StoreFuture<T>,
) -> StoreFuture<T> {
    let start = Instant::now();
    let fut = span.in_scope(call);
    match fut.into_ready() {
        Ok(result) => {
            finish(op, name, &span, start, &result);
            StoreFuture::ready(result)
        }
        Err(fut) => {
            let inner = span.clone();
            StoreFuture::new(
                async move {
                    let result = fut.await;
                    finish(op, name, &inner, start, &result);
                    result
                }
                .instrument(span),
            )
        }
    }
}

/// Records an observed operation's outcome and duration.
fn finish<T: Answer>(
    op: Op,
    name: &'static str,
    span: &tracing::Span,
    start: Instant,
    result: &Result<T, StoreError>,
) {
    let elapsed = start.elapsed();
    if !span.is_disabled() {
        let outcome = match result {
            Ok(answer) => answer.outcome(op),
            Err(_) => "error",
        };
        span.record("outcome", outcome);
        span.record(
            "duration_us",
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
    }
    #[cfg(feature = "metrics")]
    keys::duration(op, name, elapsed.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (op, name);
}

/// A store operation failed: one `ERROR` event (the operation, the store,
/// the error's kind and its chain of causes) and the error counter. Every
/// store failure the layer sees comes through here, once.
#[cold]
pub(crate) fn failed(op: Op, store: &'static str, e: &StoreError) {
    let kind = kind_str(e.kind());
    tracing::error!(
        target: TARGET,
        op = op.as_str(),
        store,
        kind,
        error = %Chain(e),
        "{}",
        op.failure(),
    );
    #[cfg(feature = "metrics")]
    metrics::counter!(
        names::STORE_ERRORS,
        "op" => op.as_str(),
        "store" => store,
        "kind" => kind,
    )
    .increment(1);
}

/// What a load found, for `session_loads_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LoadOutcome {
    Found,
    NotFound,
    Expired,
}

/// Something that happened to a session, each counted by its own counter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Created,
    Saved,
    Cycled,
    Destroyed,
    Refreshed,
}

/// Who ended sessions, for `session_ended_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum EndedBy {
    Registry,
    LinkCap,
}

/// Counts a load.
#[inline(always)]
pub(crate) fn loaded(outcome: LoadOutcome) {
    #[cfg(feature = "metrics")]
    keys::count(
        match outcome {
            LoadOutcome::Found => &keys::LOADS_FOUND,
            LoadOutcome::NotFound => &keys::LOADS_NOT_FOUND,
            LoadOutcome::Expired => &keys::LOADS_EXPIRED,
        },
        1,
    );
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Counts a session event.
#[inline(always)]
pub(crate) fn count(event: Event) {
    #[cfg(feature = "metrics")]
    keys::count(
        match event {
            Event::Created => &keys::CREATED,
            Event::Saved => &keys::SAVED,
            Event::Cycled => &keys::CYCLED,
            Event::Destroyed => &keys::DESTROYED,
            Event::Refreshed => &keys::REFRESHED,
        },
        1,
    );
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// Counts `n` sessions ended from outside their own requests.
#[inline(always)]
pub(crate) fn ended(by: EndedBy, n: usize) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        let key = match by {
            EndedBy::Registry => &keys::ENDED_REGISTRY,
            EndedBy::LinkCap => &keys::ENDED_LINK_CAP,
        };
        keys::count(key, n as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (by, n);
}

/// The memory store reclaimed `n` expired sessions.
#[inline(always)]
pub(crate) fn memory_reclaimed(n: usize) {
    #[cfg(feature = "metrics")]
    if n > 0 {
        keys::count(&keys::MEMORY_RECLAIMED, n as u64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = n;
}

/// The memory store refused a new session: it is full.
#[inline(always)]
pub(crate) fn memory_refused() {
    #[cfg(feature = "metrics")]
    keys::count(&keys::MEMORY_REFUSED, 1);
}

/// The memory store took (`true`) or gave back (`false`) one session's
/// place.
#[inline(always)]
pub(crate) fn memory_sessions(added: bool) {
    #[cfg(feature = "metrics")]
    metrics::with_recorder(|r| {
        let gauge = r.register_gauge(&keys::MEMORY_SESSIONS, &keys::META);
        if added {
            gauge.increment(1.0);
        } else {
            gauge.decrement(1.0);
        }
    });
    #[cfg(not(feature = "metrics"))]
    let _ = added;
}

/// The metric names.
#[cfg(feature = "metrics")]
mod names {
    pub(super) const LOADS: &str = "session_loads_total";
    pub(super) const CREATED: &str = "session_created_total";
    pub(super) const SAVED: &str = "session_saved_total";
    pub(super) const CYCLED: &str = "session_cycled_total";
    pub(super) const DESTROYED: &str = "session_destroyed_total";
    pub(super) const ENDED: &str = "session_ended_total";
    pub(super) const REFRESHED: &str = "session_refreshed_total";
    pub(super) const STORE_ERRORS: &str = "session_store_errors_total";
    pub(super) const STORE_DURATION: &str = "session_store_operation_duration_seconds";
    pub(super) const MEMORY_RECLAIMED: &str = "session_memory_reclaimed_total";
    pub(super) const MEMORY_REFUSED: &str = "session_memory_refused_total";
    pub(super) const MEMORY_SESSIONS: &str = "session_memory_sessions";
}

/// The metrics' keys, made at compile time: recording a metric builds no
/// key and allocates nothing (with a recorder that does not itself
/// allocate, and `metrics`' no-op recorder when none is installed). Only a
/// custom store's own name, and the failure counter, build their labels at
/// run time.
#[cfg(feature = "metrics")]
mod keys {
    use metrics::{Key, Label, Level, Metadata};

    use super::{names, Op};

    pub(super) static META: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    const fn label(key: &'static str, value: &'static str) -> Label {
        Label::from_static_parts(key, value)
    }

    static LOADS_FOUND_LABELS: [Label; 1] = [label("outcome", "found")];
    pub(super) static LOADS_FOUND: Key = Key::from_static_parts(names::LOADS, &LOADS_FOUND_LABELS);
    static LOADS_NOT_FOUND_LABELS: [Label; 1] = [label("outcome", "not_found")];
    pub(super) static LOADS_NOT_FOUND: Key =
        Key::from_static_parts(names::LOADS, &LOADS_NOT_FOUND_LABELS);
    static LOADS_EXPIRED_LABELS: [Label; 1] = [label("outcome", "expired")];
    pub(super) static LOADS_EXPIRED: Key =
        Key::from_static_parts(names::LOADS, &LOADS_EXPIRED_LABELS);
    pub(super) static CREATED: Key = Key::from_static_name(names::CREATED);
    pub(super) static SAVED: Key = Key::from_static_name(names::SAVED);
    pub(super) static CYCLED: Key = Key::from_static_name(names::CYCLED);
    pub(super) static DESTROYED: Key = Key::from_static_name(names::DESTROYED);
    pub(super) static REFRESHED: Key = Key::from_static_name(names::REFRESHED);
    static ENDED_REGISTRY_LABELS: [Label; 1] = [label("by", "registry")];
    pub(super) static ENDED_REGISTRY: Key =
        Key::from_static_parts(names::ENDED, &ENDED_REGISTRY_LABELS);
    static ENDED_LINK_CAP_LABELS: [Label; 1] = [label("by", "link_cap")];
    pub(super) static ENDED_LINK_CAP: Key =
        Key::from_static_parts(names::ENDED, &ENDED_LINK_CAP_LABELS);
    pub(super) static MEMORY_RECLAIMED: Key = Key::from_static_name(names::MEMORY_RECLAIMED);
    pub(super) static MEMORY_REFUSED: Key = Key::from_static_name(names::MEMORY_REFUSED);
    pub(super) static MEMORY_SESSIONS: Key = Key::from_static_name(names::MEMORY_SESSIONS);

    /// The `{op, store}` label pairs of one store, in [`Op`]'s order.
    macro_rules! op_labels {
        ($store:literal) => {
            [
                [label("op", "load"), label("store", $store)],
                [label("op", "create"), label("store", $store)],
                [label("op", "save"), label("store", $store)],
                [label("op", "cycle"), label("store", $store)],
                [label("op", "delete"), label("store", $store)],
                [label("op", "end"), label("store", $store)],
                [label("op", "touch"), label("store", $store)],
                [label("op", "list"), label("store", $store)],
                [label("op", "end_linked"), label("store", $store)],
                [label("op", "end_public"), label("store", $store)],
            ]
        };
    }

    static MEMORY: [[Label; 2]; 10] = op_labels!("memory");
    static REDIS: [[Label; 2]; 10] = op_labels!("redis");
    static POSTGRES: [[Label; 2]; 10] = op_labels!("postgres");
    static SQLITE: [[Label; 2]; 10] = op_labels!("sqlite");
    static CUSTOM: [[Label; 2]; 10] = op_labels!("custom");

    pub(super) fn count(key: &'static Key, n: u64) {
        metrics::with_recorder(|r| r.register_counter(key, &META).increment(n));
    }

    /// One sample of the store-operation histogram.
    pub(super) fn duration(op: Op, store: &'static str, seconds: f64) {
        let table = match store {
            "memory" => &MEMORY,
            "redis" => &REDIS,
            "postgres" => &POSTGRES,
            "sqlite" => &SQLITE,
            "custom" => &CUSTOM,
            _ => {
                let labels = vec![Label::new("op", op.as_str()), Label::new("store", store)];
                let key = Key::from_parts(names::STORE_DURATION, labels);
                return metrics::with_recorder(|r| {
                    r.register_histogram(&key, &META).record(seconds)
                });
            }
        };
        let labels: &'static [Label] = &table[op as usize];
        debug_assert_eq!(labels[0].value(), op.as_str());
        let key = Key::from_static_parts(names::STORE_DURATION, labels);
        metrics::with_recorder(|r| r.register_histogram(&key, &META).record(seconds));
    }
}

/// Describes every metric this crate records (help text and unit) to the
/// installed `metrics` recorder, so that exporters can show them (the
/// Prometheus exporter writes them as `# HELP` lines).
///
/// Call it once after installing the recorder. Recording works without
/// it; only the descriptions are missing. The metrics, their labels and
/// what they count are listed in the crate docs, under
/// [Metrics and tracing](crate#metrics-and-tracing).
///
/// # Example
///
/// ```
/// // Install the exporter's recorder first (e.g.
/// // `metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()`),
/// // then:
/// tower_session_storage::describe_metrics();
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

    describe_counter!(
        names::LOADS,
        Unit::Count,
        "Session loads for requests that carried a well-formed id, by outcome: \
         found, not_found (unknown, or already gone from the store), expired \
         (found, but past its idle or absolute timeout: deleted)"
    );
    describe_counter!(names::CREATED, Unit::Count, "Sessions created");
    describe_counter!(
        names::SAVED,
        Unit::Count,
        "Change sets saved to an existing session"
    );
    describe_counter!(
        names::CYCLED,
        Unit::Count,
        "Sessions moved to a new id (cycle_id)"
    );
    describe_counter!(
        names::DESTROYED,
        Unit::Count,
        "Sessions ended by their own request: destroy(), or a request that removed their last item"
    );
    describe_counter!(
        names::ENDED,
        Unit::Count,
        "Sessions ended from outside their requests, by: registry (SessionRegistry::end, end_all) \
         or link_cap (the oldest sessions past with_max_sessions_per_link)"
    );
    describe_counter!(
        names::REFRESHED,
        Unit::Count,
        "Expiry refreshes written on their own (a request that changed nothing but was due a refresh)"
    );
    describe_counter!(
        names::STORE_ERRORS,
        Unit::Count,
        "Failed store operations, by operation, store and error kind (unavailable, full, other)"
    );
    describe_histogram!(
        names::STORE_DURATION,
        Unit::Seconds,
        "Duration of store operations, by operation and store (failures included)"
    );
    describe_counter!(
        names::MEMORY_RECLAIMED,
        Unit::Count,
        "Expired sessions the memory store removed by itself (swept, or found expired on a load)"
    );
    describe_counter!(
        names::MEMORY_REFUSED,
        Unit::Count,
        "New sessions the memory store refused because it held its maximum (answered 503)"
    );
    describe_gauge!(
        names::MEMORY_SESSIONS,
        Unit::Count,
        "Sessions held by memory stores, including expired ones not yet reclaimed"
    );
}
