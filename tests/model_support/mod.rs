//! The model-based concurrency check behind `tests/model.rs`.
//!
//! One **history**: a few sessions (slots), each shared by a few concurrent
//! clients ("browser tabs") that share the slot's cookie jar. Each tab runs
//! a random sequence of requests through the real [`SessionLayer`] (a tower
//! service from `ServiceBuilder::new().layer(layer).service_fn(handler)`,
//! called with `oneshot`); a response's `Set-Cookie` updates the jar, an
//! expired one clears it. The history runs in phases; between phases time
//! may pass (past the idle or the absolute timeout). The store is wrapped in
//! [`faulty::Faulty`], which delays each call and fails some of them.
//!
//! Everything random comes from one `u64` seed (a splitmix64 generator): the
//! shape of the history, the ops, the think times, the handler's delays, and
//! (from a second stream) the store's delays and faults. On `MemoryStore`
//! the history runs on a current-thread runtime with paused tokio time, so
//! delays are virtual and a seed replays the same interleaving.
//!
//! The ops ([`Kind`]): read; write a key of its own (`k<op> = v<op>`);
//! the same then `cycle_id`; write the shared key; clear (then write the
//! marker back); `cycle_id`; `destroy`; write a key of its own and answer
//! 500. A third of the histories use a mix heavy on `cycle_id` and
//! `destroy`. Every session carries a marker item (`lineage = L<op>`,
//! written by the request that created it) that names it whatever its id.
//!
//! Links and the registry: every request that writes its own key (`Write`,
//! `WriteCycle`, `Fail500`) also links its session as `user = u<slot % 2>`
//! (so with two or more slots there are two users; `Shared` writes without
//! linking, so some sessions are never linked). Three histories in four
//! also mix in the registry's ops: `EndAll` (a request whose handler calls
//! `end_all(user, u<slot % 2>, None)` through the `SessionRegistry` the
//! layer put in its extensions), `EndOthers` (the same, keeping the tab's
//! own `public_id()`: "sign out everywhere else"), `EndOne` (`end` of a
//! public id some earlier request observed through `public_id()`, picked by
//! the seed), and `EndAllTask` (`end_all` from outside any request, through
//! `layer.registry()`, for a user picked by the seed). Every request also
//! reports the `public_id()` of the session it loaded.
//!
//! When the history is done, every id ever handed out or seen by the store
//! is probed through the layer (with every key the history wrote), every id
//! the store ever saw is also read straight from the store, and
//! [`oracle::check`] compares all of it with the documented semantics.

pub(crate) mod faulty;
pub(crate) mod oracle;
pub(crate) mod reference;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{ServiceBuilder, ServiceExt};
use tower_session_storage::store::Timestamp;
use tower_session_storage::{
    PublicId, SessionId, SessionLayer, SessionRegistry, SessionStorage, SessionStore, StoreError,
    StoreErrorKind,
};

use faulty::{Control, FaultPlan, Faulty, REQUEST};

/// The item every session carries from its creation: `lineage = L<op>`,
/// where `<op>` is the request that created it. It moves with the data
/// (`cycle_id`), so it names the session whatever its id.
pub(crate) const MARKER: &str = "lineage";
/// The key every `Shared` op writes (last writer wins).
pub(crate) const SHARED: &str = "shared";
/// The link name every linking op uses; the value is the slot's user.
pub(crate) const LINK: &str = "user";

/// The user (link value) of slot `slot`'s sessions: two users, so that an
/// `end_all` for one can be seen to spare the other's.
pub(crate) fn user_of(slot: usize) -> usize {
    slot % 2
}

fn user_name(user: usize) -> String {
    format!("u{user}")
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// splitmix64: small, fast, and good enough to pick schedules.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// Picks by weight.
    pub(crate) fn weighted<T: Copy>(&mut self, table: &[(u64, T)]) -> T {
        let total: u64 = table.iter().map(|(w, _)| w).sum();
        let mut x = self.below(total);
        for &(w, t) in table {
            if x < w {
                return t;
            }
            x -= w;
        }
        table[table.len() - 1].1
    }
}

/// The seed of history `i` of a run whose base seed is `base`.
pub(crate) fn history_seed(base: u64, i: u64) -> u64 {
    Rng::new(base ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// A store error with its causes: `session store failed: <why>`.
fn chain(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// The first 8 characters of an id: enough to tell ids apart in a trace.
pub(crate) fn short(id: &SessionId) -> String {
    id.to_string()[..8].to_owned()
}

fn short_str(id: &str) -> &str {
    &id[..id.len().min(8)]
}

// ---------------------------------------------------------------------------
// The event log
// ---------------------------------------------------------------------------

/// Every request start and end and every store call, in the order they
/// happened: printed when a history fails.
#[derive(Clone, Default)]
pub(crate) struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub(crate) fn push(&self, e: String) {
        self.0.lock().unwrap().push(e);
    }

    fn dump(&self) -> String {
        let all = self.0.lock().unwrap();
        let mut out = String::new();
        for (i, e) in all.iter().enumerate() {
            out.push_str(&format!("{i:5} {e}\n"));
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Settings per store
// ---------------------------------------------------------------------------

/// How a store is driven: timeouts, clock, and the store's misbehaviour.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) name: &'static str,
    pub(crate) idle: Duration,
    pub(crate) absolute: Duration,
    /// Tokio time is paused (virtual delays, deterministic replay).
    pub(crate) paused: bool,
    /// Slack, in ms, between the oracle's clock and the crate's (the crate
    /// reads milliseconds; with real time, scheduling noise too).
    pub(crate) margin_ms: u64,
    /// Upper bound of the store's and the handler's random delays.
    pub(crate) max_delay: Duration,
    /// Per mille of the phase ends followed by a short time step
    /// (`idle * 0.3 ..= idle * 0.7`): sessions may or may not expire.
    pub(crate) short_step_per_mille: u64,
    /// Per mille of the phase ends followed by a step past the idle
    /// timeout: every session expires.
    pub(crate) long_step_per_mille: u64,
    /// Whether the store may stall a call past the idle timeout.
    pub(crate) stalls: bool,
    /// Whether a history may use the layer's in-place path (a store with
    /// no delays, answering with ready `StoreFuture`s).
    pub(crate) immediate: bool,
    /// Whether every store failure is an injected one (an in-process
    /// store): then every 5xx must have failed cleanly.
    pub(crate) in_process: bool,
    /// Most slots, and most tabs per slot.
    pub(crate) max_slots: u64,
    pub(crate) max_tabs: u64,
    pub(crate) max_phases: u64,
    pub(crate) max_ops: u64,
}

impl Setup {
    pub(crate) fn idle_ms(&self) -> u64 {
        self.idle.as_millis() as u64
    }
    pub(crate) fn absolute_ms(&self) -> u64 {
        self.absolute.as_millis() as u64
    }
    /// The layer's refresh step: `idle / 16`, at most a minute.
    pub(crate) fn step_ms(&self) -> u64 {
        (self.idle_ms() / 16).min(60_000)
    }
}

// ---------------------------------------------------------------------------
// Ops and the handler
// ---------------------------------------------------------------------------

/// What one request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reads the marker.
    Read,
    /// Writes its own key `k<op> = v<op>`.
    Write,
    /// Writes its own key, then `cycle_id()`.
    WriteCycle,
    /// Writes `shared = v<op>`.
    Shared,
    /// `clear()`, then writes the marker back: every other item goes.
    Clear,
    /// `cycle_id()`.
    Cycle,
    /// `destroy()`.
    Destroy,
    /// Writes its own key, then answers 500.
    Fail500,
    /// `registry.end_all("user", u<slot % 2>, None)` from the handler (the
    /// registry from the request's extensions); 500 when it fails.
    EndAll,
    /// The same, keeping the tab's own session (`public_id()`).
    EndOthers,
    /// `registry.end(p)` of a public id an earlier request observed.
    EndOne,
    /// `end_all` from outside any request, through `layer.registry()`.
    EndAllTask,
    /// The end-of-history probe: reads every key the history wrote.
    Probe,
}

impl Kind {
    pub(crate) fn writes_own_key(self) -> bool {
        matches!(self, Kind::Write | Kind::WriteCycle | Kind::Fail500)
    }
    /// Ops that link their session (`user = u<slot % 2>`).
    pub(crate) fn links(self) -> bool {
        self.writes_own_key()
    }
    /// Ops that end sessions through the registry.
    pub(crate) fn ends(self) -> bool {
        matches!(
            self,
            Kind::EndAll | Kind::EndOthers | Kind::EndOne | Kind::EndAllTask
        )
    }
    pub(crate) fn cycles(self) -> bool {
        matches!(self, Kind::WriteCycle | Kind::Cycle)
    }
    /// Ops that can make a concurrent request's change set be dropped or
    /// wiped: a move, a logout, a clear.
    pub(crate) fn disrupts(self) -> bool {
        matches!(
            self,
            Kind::WriteCycle | Kind::Cycle | Kind::Destroy | Kind::Clear
        )
    }
}

/// The request's instructions to the handler, in its extensions.
#[derive(Clone)]
struct OpExt {
    op: u64,
    kind: Kind,
    handler_delay: Duration,
    probe_keys: Option<Arc<Vec<String>>>,
    report: Arc<Mutex<Report>>,
    /// The link value (user) this request links to and ends.
    user: String,
    /// `EndOne`: the public id to end.
    target: Option<PublicId>,
}

/// What the handler saw and did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Report {
    /// The marker of the session the request loaded.
    pub(crate) seen: Option<String>,
    /// The marker this request created (it found no session and wrote).
    pub(crate) created: Option<String>,
    /// Probe: every known key present, with its value.
    pub(crate) values: Vec<(String, String)>,
    /// `public_id()` of the session the request loaded (read before the
    /// handler changed anything).
    pub(crate) public_id: Option<String>,
    /// What the registry call answered: how many it ended (`end`: 1 or
    /// 0), or its error. `None`: no registry call was made.
    pub(crate) reg: Option<Result<u64, String>>,
}

async fn handler(req: Request<String>) -> Result<Response<String>, Infallible> {
    let op = req.extensions().get::<OpExt>().cloned().expect("OpExt");
    let s = req
        .extensions()
        .get::<SessionStorage>()
        .cloned()
        .expect("SessionStorage: is SessionLayer installed?");
    let registry = req.extensions().get::<SessionRegistry>().cloned();
    let seen = s.get_item(MARKER);
    let public_id = s.public_id();
    if !op.handler_delay.is_zero() {
        tokio::time::sleep(op.handler_delay).await;
    }
    let mut created = None;
    let mut reg = None;
    let mut status = StatusCode::OK;
    let mut mark = |s: &SessionStorage| {
        if seen.is_none() {
            let l = format!("L{}", op.op);
            s.set_item(MARKER, &l).expect("marker fits");
            created = Some(l);
        }
    };
    let (key, val) = (format!("k{}", op.op), format!("v{}", op.op));
    match op.kind {
        Kind::Read | Kind::Probe => {}
        Kind::Write | Kind::WriteCycle | Kind::Fail500 => {
            mark(&s);
            s.set_item(&key, &val).expect("under the item caps");
            s.link(LINK, &op.user).expect("a valid link, under the cap");
            if op.kind == Kind::WriteCycle {
                s.cycle_id();
            }
            if op.kind == Kind::Fail500 {
                status = StatusCode::INTERNAL_SERVER_ERROR;
            }
        }
        Kind::Shared => {
            mark(&s);
            s.set_item(SHARED, &val).expect("under the item caps");
        }
        Kind::Clear => {
            if let Some(l) = &seen {
                s.clear();
                s.set_item(MARKER, l).expect("marker fits");
            }
        }
        Kind::Cycle => s.cycle_id(),
        Kind::Destroy => s.destroy(),
        Kind::EndAll | Kind::EndOthers | Kind::EndOne => {
            let registry = registry.expect("SessionRegistry: the layer puts one in every request");
            let r = match op.kind {
                Kind::EndOne => match &op.target {
                    Some(p) => Some(registry.end(p).await.map(u64::from)),
                    None => None,
                },
                _ => {
                    let keep = if op.kind == Kind::EndOthers {
                        public_id.as_ref()
                    } else {
                        None
                    };
                    Some(
                        registry
                            .end_all(LINK, &op.user, keep)
                            .await
                            .map(|n| n as u64),
                    )
                }
            };
            if let Some(Err(_)) = &r {
                status = StatusCode::INTERNAL_SERVER_ERROR;
            }
            reg = r.map(|r| r.map_err(|e| chain(&e)));
        }
        Kind::EndAllTask => unreachable!("EndAllTask runs outside the layer"),
    }
    let mut values = Vec::new();
    if let Some(keys) = &op.probe_keys {
        for k in keys.iter() {
            if let Some(v) = s.get_item(k) {
                values.push((k.clone(), v));
            }
        }
    }
    *op.report.lock().unwrap() = Report {
        seen,
        created,
        values,
        public_id: public_id.map(|p| p.to_string()),
        reg,
    };
    let mut res = Response::new(String::new());
    *res.status_mut() = status;
    Ok(res)
}

// ---------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    think: Duration,
    handler_delay: Duration,
    /// `EndOne`: which observed public id to end (an index, modulo how
    /// many were observed when it starts); `EndAllTask`: its user (mod 2).
    arg: u64,
}

#[derive(Clone, Debug)]
struct Phase {
    /// Per tab, its steps in order.
    tabs: Vec<Vec<Step>>,
    /// Time that passes once every tab is done with the phase.
    then: Duration,
}

#[derive(Clone, Debug)]
struct Plan {
    /// The slot (session, cookie jar) of each tab.
    tab_slot: Vec<usize>,
    slots: usize,
    phases: Vec<Phase>,
    faults: FaultPlan,
}

const OPS: &[(u64, Kind)] = &[
    (20, Kind::Read),
    (24, Kind::Write),
    (5, Kind::WriteCycle),
    (12, Kind::Shared),
    (5, Kind::Clear),
    (10, Kind::Cycle),
    (8, Kind::Destroy),
    (6, Kind::Fail500),
];

/// A mix heavy on the ops that race each other (sign-in churn, logouts).
const HOT_OPS: &[(u64, Kind)] = &[
    (10, Kind::Read),
    (15, Kind::Write),
    (8, Kind::WriteCycle),
    (6, Kind::Shared),
    (4, Kind::Clear),
    (20, Kind::Cycle),
    (15, Kind::Destroy),
    (4, Kind::Fail500),
];

/// The registry's ops, mixed into three histories in four.
const REGISTRY_OPS: &[(u64, Kind)] = &[
    (4, Kind::EndAll),
    (3, Kind::EndOthers),
    (4, Kind::EndOne),
    (2, Kind::EndAllTask),
];

fn delay(rng: &mut Rng, max: Duration) -> Duration {
    let max_us = max.as_micros() as u64;
    if max_us == 0 || rng.below(3) == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rng.below(max_us + 1))
}

fn plan(seed: u64, setup: &Setup) -> Plan {
    let mut rng = Rng::new(seed);
    let slots = rng.range(1, setup.max_slots) as usize;
    let mut tab_slot = Vec::new();
    for s in 0..slots {
        for _ in 0..rng.range(2, setup.max_tabs) {
            tab_slot.push(s);
        }
    }
    let fault_per_mille = [0, 20, 60, 150][rng.below(4) as usize];
    let immediate = setup.immediate && rng.below(4) == 0;
    let max_delay = if rng.below(5) == 0 {
        Duration::ZERO
    } else {
        setup.max_delay
    };
    let stalls = setup.stalls && rng.below(8) == 0;
    let base = if rng.below(3) == 0 { HOT_OPS } else { OPS };
    let mut ops = base.to_vec();
    if rng.below(4) > 0 {
        ops.extend_from_slice(REGISTRY_OPS);
    }
    let ops = &ops[..];
    let idle_ms = setup.idle_ms();
    let mut phases = Vec::new();
    for _ in 0..rng.range(1, setup.max_phases) {
        let tabs = tab_slot
            .iter()
            .map(|_| {
                (0..rng.range(1, setup.max_ops))
                    .map(|_| Step {
                        kind: rng.weighted(ops),
                        think: delay(&mut rng, max_delay),
                        handler_delay: delay(&mut rng, max_delay),
                        arg: rng.next_u64(),
                    })
                    .collect()
            })
            .collect();
        let then = if rng.chance(setup.long_step_per_mille) {
            Duration::from_millis(idle_ms + 2 * setup.margin_ms + rng.below(idle_ms / 10 + 1))
        } else if rng.chance(setup.short_step_per_mille) {
            Duration::from_millis(rng.range(idle_ms * 3 / 10, idle_ms * 7 / 10))
        } else {
            Duration::ZERO
        };
        phases.push(Phase { tabs, then });
    }
    Plan {
        tab_slot,
        slots,
        phases,
        faults: FaultPlan {
            fault_per_mille,
            applied_fault_per_mille: fault_per_mille / 3,
            max_delay_us: max_delay.as_micros() as u64,
            stall_per_mille: if stalls { 15 } else { 0 },
            stall: setup.idle + Duration::from_millis(setup.idle_ms() / 20),
            immediate,
        },
    }
}

// ---------------------------------------------------------------------------
// Running a history
// ---------------------------------------------------------------------------

/// One request as the oracle sees it.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) op: u64,
    pub(crate) slot: usize,
    pub(crate) tab: usize,
    pub(crate) kind: Kind,
    /// The id the request carried (the jar's value when it was sent).
    pub(crate) cookie: Option<String>,
    /// Logical clock: every request start and end takes the next number,
    /// so "A ended before B started" is `a.end_seq < b.start_seq` even when
    /// (paused) time did not move.
    pub(crate) start_seq: u64,
    pub(crate) end_seq: u64,
    /// Milliseconds since the history's start, by tokio's clock.
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) status: u16,
    /// `None`: no `Set-Cookie`; `Some(None)`: the cookie expired;
    /// `Some(Some(id))`: this id handed out.
    pub(crate) set_cookie: Option<Option<String>>,
    pub(crate) seen: Option<String>,
    pub(crate) created: Option<String>,
    /// Faults injected into this request's store calls.
    pub(crate) faults: u32,
    /// Of those, the ones before forwarding into a call whose failure fails
    /// the request.
    pub(crate) fatal_faults: u32,
    /// Of those, the ones after the call was applied.
    pub(crate) applied_faults: u32,
    /// The store error the response carries, if any.
    pub(crate) store_error: Option<StoreErrorKind>,
    /// The user (link value `u<user>`) it links to or ends.
    pub(crate) user: usize,
    /// `public_id()` of the session its handler loaded.
    pub(crate) public_id: Option<String>,
    /// `EndOne`: the public id it ended.
    pub(crate) target: Option<String>,
    /// What its registry call answered (`None`: no call was made).
    pub(crate) reg: Option<Result<u64, String>>,
    /// Faults injected into its registry call, before forwarding (the
    /// call ended nothing) and after it was applied.
    pub(crate) reg_before: u32,
    pub(crate) reg_after: u32,
}

/// Whether a registry call took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Yes,
    No,
    Maybe,
}

impl Req {
    /// Got a 5xx that changed nothing: an injected fault (the failed call
    /// was never forwarded), the handler's 500, or a memory store at its cap
    /// refusing a new session (`StoreErrorKind::Full`, documented to create
    /// nothing).
    pub(crate) fn failed_cleanly(&self) -> bool {
        self.status >= 500
            && (self.fatal_faults > 0
                || self.kind == Kind::Fail500
                || self.store_error == Some(StoreErrorKind::Full))
    }
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    /// The lineage this request's changes were made to.
    pub(crate) fn lineage(&self) -> Option<&str> {
        self.seen.as_deref().or(self.created.as_deref())
    }
    /// Whether the two requests were in flight at the same time.
    pub(crate) fn overlaps(&self, other: &Req) -> bool {
        self.start_seq < other.end_seq && other.start_seq < self.end_seq
    }
    /// Whether its registry call ended what it asked: it answered (`Yes`),
    /// was never made or failed before it was forwarded (`No`), or failed
    /// otherwise (`Maybe`: after it was applied, or for real).
    pub(crate) fn applied(&self) -> Applied {
        match &self.reg {
            None => Applied::No,
            Some(Ok(_)) => Applied::Yes,
            Some(Err(_)) if self.reg_before > 0 && self.reg_after == 0 => Applied::No,
            Some(Err(_)) => Applied::Maybe,
        }
    }
}

/// A moment between phases, once time has passed.
#[derive(Clone, Debug)]
pub(crate) struct Barrier {
    pub(crate) seq: u64,
    pub(crate) now_ms: u64,
}

/// The final look at the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct Final {
    /// Each id ever handed out or seen by the store, probed through the
    /// layer (no faults).
    pub(crate) probes: Vec<(String, Report)>,
    /// Each id the store ever saw, read straight from the store: its items.
    pub(crate) scan: Vec<(String, Vec<(String, String)>)>,
    pub(crate) end_ms: u64,
    /// Probes that did not answer 2xx (a real store failure): reported.
    pub(crate) probe_failures: Vec<String>,
}

#[derive(Default)]
struct Log {
    seq: u64,
    reqs: Vec<Req>,
    barriers: Vec<Barrier>,
}

struct Ctx<S> {
    layer: SessionLayer<Faulty<S>>,
    ctl: Arc<Control>,
    jars: Vec<Mutex<Option<String>>>,
    log: Mutex<Log>,
    events: Events,
    origin: tokio::time::Instant,
    /// Every public id a request observed (`public_id()` of the session it
    /// loaded), in the order the requests ended: `EndOne` picks from them.
    observed: Mutex<Vec<PublicId>>,
}

impl<S> Ctx<S> {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

/// Figures over one or many histories.
#[derive(Clone, Debug, Default)]
pub(crate) struct Figures {
    pub(crate) histories: u64,
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) server_errors: u64,
    pub(crate) store_calls: u64,
    pub(crate) faults: u64,
    pub(crate) applied_faults: u64,
    pub(crate) stalls: u64,
    pub(crate) time_steps: u64,
    pub(crate) protected_writes_checked: u64,
    pub(crate) dead_ids_checked: u64,
    pub(crate) destroy_cycle_races: u64,
    /// Sessions the oracle knows expired (at a barrier), and of those the
    /// ones only the absolute timeout can have ended.
    pub(crate) expired_sessions: u64,
    pub(crate) expired_by_absolute: u64,
    /// Registry calls (`end_all`, `end`) made, and of those the ones that
    /// answered.
    pub(crate) registry_calls: u64,
    pub(crate) registry_ok: u64,
    /// Sessions a registry call that answered must have ended (rules 7
    /// and 10), whose afterlife was checked.
    pub(crate) ended_checked: u64,
    /// Of those, the ones a cycle of the same session raced.
    pub(crate) end_cycle_races: u64,
    /// Sessions a registry call of their user (or an `end` of another
    /// session) must have spared, whose acknowledged writes were checked
    /// (rules 8, 9 and 10 through rule 1).
    pub(crate) spared_checked: u64,
}

impl Figures {
    pub(crate) fn add(&mut self, o: &Figures) {
        self.histories += o.histories;
        self.requests += o.requests;
        self.ok += o.ok;
        self.server_errors += o.server_errors;
        self.store_calls += o.store_calls;
        self.faults += o.faults;
        self.applied_faults += o.applied_faults;
        self.stalls += o.stalls;
        self.time_steps += o.time_steps;
        self.protected_writes_checked += o.protected_writes_checked;
        self.dead_ids_checked += o.dead_ids_checked;
        self.destroy_cycle_races += o.destroy_cycle_races;
        self.expired_sessions += o.expired_sessions;
        self.expired_by_absolute += o.expired_by_absolute;
        self.registry_calls += o.registry_calls;
        self.registry_ok += o.registry_ok;
        self.ended_checked += o.ended_checked;
        self.end_cycle_races += o.end_cycle_races;
        self.spared_checked += o.spared_checked;
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} histories, {} requests ({} 2xx, {} 5xx), {} store calls, {} faults injected ({} after the call applied), \
             {} stalls, {} time steps; checked {} acknowledged writes, {} dead ids; \
             {} destroy/cycle races; {} sessions expired ({} by the absolute timeout); \
             {} registry calls ({} answered), {} sessions it ended checked ({} raced by a cycle), \
             {} sessions it spared checked",
            self.histories,
            self.requests,
            self.ok,
            self.server_errors,
            self.store_calls,
            self.faults,
            self.applied_faults,
            self.stalls,
            self.time_steps,
            self.protected_writes_checked,
            self.dead_ids_checked,
            self.destroy_cycle_races,
            self.expired_sessions,
            self.expired_by_absolute,
            self.registry_calls,
            self.registry_ok,
            self.ended_checked,
            self.end_cycle_races,
            self.spared_checked
        )
    }
}

/// A memory store's `len`, for invariant 4.
pub(crate) type Cap = Option<(usize, Arc<dyn Fn() -> usize + Send + Sync>)>;

fn configure<T>(layer: SessionLayer<T>, setup: &Setup) -> SessionLayer<T> {
    layer
        .with_idle_timeout(setup.idle)
        .with_absolute_timeout(setup.absolute)
}

/// Runs the history of `seed` against `store` and checks it. `Err` holds
/// the report of a failed check: violations, plan, and the event trace.
pub(crate) async fn run_history<S>(
    seed: u64,
    store: S,
    setup: &Setup,
    cap: Cap,
) -> (Figures, Result<(), String>)
where
    S: SessionStore + Clone,
{
    let plan = plan(seed, setup);
    let events = Events::default();
    let ctl = Control::new(plan.faults, seed ^ 0x5EED_FA17, cap, events.clone());
    let layer = configure(
        SessionLayer::new(Faulty {
            inner: Arc::new(store.clone()),
            ctl: ctl.clone(),
        }),
        setup,
    );
    let ctx = Arc::new(Ctx {
        layer,
        ctl: ctl.clone(),
        jars: (0..plan.slots).map(|_| Mutex::new(None)).collect(),
        log: Mutex::new(Log::default()),
        events: events.clone(),
        origin: tokio::time::Instant::now(),
        observed: Mutex::new(Vec::new()),
    });
    events.push(format!(
        "plan: {} slots, tabs -> slots {:?}, faults {}/1000, max delay {} us, stalls {}, \
         in-place store path {}",
        plan.slots,
        plan.tab_slot,
        plan.faults.fault_per_mille,
        plan.faults.max_delay_us,
        plan.faults.stall_per_mille > 0,
        plan.faults.immediate
    ));

    let mut figures = Figures {
        histories: 1,
        ..Figures::default()
    };
    let mut op_counter = 0u64;
    for (p, phase) in plan.phases.iter().enumerate() {
        events.push(format!("--- phase {p}"));
        let mut tasks = tokio::task::JoinSet::new();
        for (tab, steps) in phase.tabs.iter().enumerate() {
            let mut numbered = Vec::new();
            for s in steps {
                op_counter += 1;
                numbered.push((op_counter, s.clone()));
            }
            let ctx = ctx.clone();
            let slot = plan.tab_slot[tab];
            tasks.spawn(async move {
                for (op, step) in numbered {
                    if !step.think.is_zero() {
                        tokio::time::sleep(step.think).await;
                    }
                    one_request(&ctx, op, slot, tab, &step).await;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.expect("a tab panicked");
        }
        if !phase.then.is_zero() {
            figures.time_steps += 1;
            events.push(format!("--- {} ms pass", phase.then.as_millis()));
            if setup.paused {
                tokio::time::advance(phase.then).await;
            } else {
                tokio::time::sleep(phase.then).await;
            }
        }
        let mut log = ctx.log.lock().unwrap();
        log.seq += 1;
        let b = Barrier {
            seq: log.seq,
            now_ms: ctx.now_ms(),
        };
        events.push(format!("--- barrier at {} ms (seq {})", b.now_ms, b.seq));
        log.barriers.push(b);
    }

    // The final look: every id the store saw, straight from the store, then
    // every id handed out, through a layer with no faults.
    let end_ms = ctx.now_ms();
    let (reqs, barriers) = {
        let log = ctx.log.lock().unwrap();
        (log.reqs.clone(), log.barriers.clone())
    };
    let mut fin = Final {
        end_ms,
        ..Final::default()
    };
    let seen_ids: Vec<SessionId> = ctl.ids.lock().unwrap().iter().copied().collect();
    for id in seen_ids {
        if let Ok(Some(rec)) = store.load(&id, Timestamp::now()).await {
            let items = rec
                .items
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            fin.scan.push((id.to_string(), items));
        }
    }
    let mut keys: BTreeSet<String> = BTreeSet::new();
    keys.insert(SHARED.to_owned());
    for r in &reqs {
        if r.kind.writes_own_key() {
            keys.insert(format!("k{}", r.op));
        }
    }
    let keys = Arc::new(keys.into_iter().collect::<Vec<_>>());
    // Every id handed out, and every id the store was asked about (a create
    // or a cycle that applied and then failed put a session under an id no
    // client ever got).
    let mut handed: BTreeSet<String> = reqs
        .iter()
        .filter_map(|r| r.set_cookie.clone().flatten())
        .collect();
    handed.extend(ctl.ids.lock().unwrap().iter().map(ToString::to_string));
    let probe_layer = configure(SessionLayer::new(store.clone()), setup);
    for id in handed {
        let report = Arc::new(Mutex::new(Report::default()));
        let mut req = Request::new(String::new());
        req.headers_mut().insert(
            http::header::COOKIE,
            format!("id={id}").parse().expect("header"),
        );
        req.extensions_mut().insert(OpExt {
            op: 0,
            kind: Kind::Probe,
            handler_delay: Duration::ZERO,
            probe_keys: Some(keys.clone()),
            report: report.clone(),
            user: user_name(0),
            target: None,
        });
        let svc = ServiceBuilder::new()
            .layer(probe_layer.clone())
            .service_fn(handler);
        let res = svc.oneshot(req).await.expect("infallible");
        if !res.status().is_success() {
            fin.probe_failures.push(format!(
                "the final probe of id {} answered {} ({:?}): the store failed for real",
                short_str(&id),
                res.status(),
                res.extensions().get::<StoreError>()
            ));
            continue;
        }
        let r = report.lock().unwrap().clone();
        fin.probes.push((id, r));
    }

    figures.requests = reqs.len() as u64;
    figures.ok = reqs.iter().filter(|r| r.ok()).count() as u64;
    figures.server_errors = reqs.iter().filter(|r| r.status >= 500).count() as u64;
    figures.store_calls = ctl.stats.calls.load(Ordering::Relaxed);
    figures.faults = ctl.stats.faults.load(Ordering::Relaxed);
    figures.applied_faults = ctl.stats.applied_faults.load(Ordering::Relaxed);
    figures.faults += figures.applied_faults;
    figures.stalls = ctl.stats.stalls.load(Ordering::Relaxed);

    let mut violations = ctl.cap_violations.lock().unwrap().clone();
    violations.extend(fin.probe_failures.iter().cloned());
    let verdict = oracle::check(setup, &reqs, &barriers, &fin, &mut figures);
    violations.extend(verdict);
    if violations.is_empty() {
        return (figures, Ok(()));
    }
    let mut report = String::new();
    report.push_str(&format!(
        "model check failed on {} for seed {seed}\n\nviolations:\n",
        setup.name
    ));
    for v in &violations {
        report.push_str(&format!("  - {v}\n"));
    }
    report.push_str(&format!(
        "\nhistory (#op tab/slot: requests in start order):\n{}",
        describe(&reqs)
    ));
    report.push_str(&format!("\nevents in order:\n{}", events.dump()));
    report.push_str(&format!("\nfinal probes:\n{}", describe_final(&fin)));
    (figures, Err(report))
}

async fn one_request<S: SessionStore>(ctx: &Ctx<S>, op: u64, slot: usize, tab: usize, step: &Step) {
    let report = Arc::new(Mutex::new(Report::default()));
    let user = if step.kind == Kind::EndAllTask {
        (step.arg % 2) as usize
    } else {
        user_of(slot)
    };
    let target = (step.kind == Kind::EndOne)
        .then(|| {
            let observed = ctx.observed.lock().unwrap();
            (!observed.is_empty()).then(|| observed[(step.arg % observed.len() as u64) as usize])
        })
        .flatten();
    let mut req = Request::new(String::new());
    req.extensions_mut().insert(OpExt {
        op,
        kind: step.kind,
        handler_delay: step.handler_delay,
        probe_keys: None,
        report: report.clone(),
        user: user_name(user),
        target,
    });
    let outside = step.kind == Kind::EndAllTask;
    let (cookie, start_seq, start_ms) = {
        let mut log = ctx.log.lock().unwrap();
        let cookie = if outside {
            None
        } else {
            ctx.jars[slot].lock().unwrap().clone()
        };
        log.seq += 1;
        (cookie, log.seq, ctx.now_ms())
    };
    if let Some(c) = &cookie {
        req.headers_mut().insert(
            http::header::COOKIE,
            format!("id={c}").parse().expect("header"),
        );
    }
    ctx.events.push(format!(
        "-> #{op} tab {tab}/slot {slot} {:?}{}{} cookie {} (t={start_ms} ms)",
        step.kind,
        if step.kind.ends() {
            format!(" user u{user}")
        } else {
            String::new()
        },
        target.map_or(String::new(), |p| format!(
            " target {}",
            faulty::short_public(&p)
        )),
        cookie.as_deref().map_or("-", short_str),
    ));
    let (status, set_cookies, store_error) = if outside {
        // A task outside requests: an admin job, a back-channel endpoint.
        let registry = ctx.layer.registry();
        let r = REQUEST
            .scope(op, async {
                if !step.handler_delay.is_zero() {
                    tokio::time::sleep(step.handler_delay).await;
                }
                registry.end_all(LINK, &user_name(user), None).await
            })
            .await;
        let status = if r.is_ok() {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let store_error = r.as_ref().err().map(StoreError::kind);
        report.lock().unwrap().reg = Some(r.map(|n| n as u64).map_err(|e| chain(&e)));
        (status, Vec::new(), store_error)
    } else {
        let svc = ServiceBuilder::new()
            .layer(ctx.layer.clone())
            .service_fn(handler);
        let res = REQUEST
            .scope(op, svc.oneshot(req))
            .await
            .expect("infallible");
        let set_cookies: Vec<String> = res
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("ASCII Set-Cookie").to_owned())
            .collect();
        let store_error = res.extensions().get::<StoreError>().map(StoreError::kind);
        (res.status(), set_cookies, store_error)
    };
    assert!(
        set_cookies.len() <= 1,
        "more than one Set-Cookie: {set_cookies:?}"
    );
    let set_cookie = set_cookies.first().map(|c| {
        let pair = c.split(';').next().unwrap_or_default();
        let value = pair.strip_prefix("id=").expect("our cookie").to_owned();
        (!value.is_empty()).then_some(value)
    });
    let rep = report.lock().unwrap().clone();
    let f = ctx
        .ctl
        .faulted
        .lock()
        .unwrap()
        .get(&op)
        .copied()
        .unwrap_or_default();
    if let Some(p) = rep.public_id.as_deref() {
        let p: PublicId = p.parse().expect("a public id reads back");
        ctx.observed.lock().unwrap().push(p);
    }
    let mut log = ctx.log.lock().unwrap();
    log.seq += 1;
    let end_seq = log.seq;
    if let Some(c) = &set_cookie {
        *ctx.jars[slot].lock().unwrap() = c.clone();
    }
    let r = Req {
        op,
        slot,
        tab,
        kind: step.kind,
        cookie,
        start_seq,
        end_seq,
        start_ms,
        end_ms: ctx.now_ms(),
        status: status.as_u16(),
        set_cookie,
        seen: rep.seen,
        created: rep.created,
        faults: f.all,
        fatal_faults: f.fatal_before,
        applied_faults: f.after,
        store_error,
        user,
        public_id: rep.public_id,
        target: target.map(|p| p.to_string()),
        reg: rep.reg,
        reg_before: f.registry_before,
        reg_after: f.registry_after,
    };
    ctx.events.push(format!("<- {}", describe_one(&r)));
    log.reqs.push(r);
}

fn describe_one(r: &Req) -> String {
    let sc = match &r.set_cookie {
        None => "-".to_owned(),
        Some(None) => "EXPIRED".to_owned(),
        Some(Some(id)) => short_str(id).to_owned(),
    };
    let mut extra = String::new();
    if r.kind.ends() {
        extra.push_str(&format!(" user u{}", r.user));
    }
    if let Some(t) = &r.target {
        extra.push_str(&format!(" target {}", short_str(t)));
    }
    if let Some(p) = &r.public_id {
        extra.push_str(&format!(" public {}", short_str(p)));
    }
    match &r.reg {
        Some(Ok(n)) => extra.push_str(&format!(" registry -> {n}")),
        Some(Err(e)) => extra.push_str(&format!(" registry -> Err({e})")),
        None => {}
    }
    format!(
        "#{} tab {}/slot {} {:?}{extra} cookie {} -> {}{} set-cookie {} saw {} created {} faults {} \
         (seq {}..{}, t {}..{} ms)",
        r.op,
        r.tab,
        r.slot,
        r.kind,
        r.cookie.as_deref().map_or("-", short_str),
        r.status,
        r.store_error.map_or(String::new(), |k| format!(" ({k:?})")),
        sc,
        r.seen.as_deref().unwrap_or("-"),
        r.created.as_deref().unwrap_or("-"),
        r.faults,
        r.start_seq,
        r.end_seq,
        r.start_ms,
        r.end_ms
    )
}

fn describe(reqs: &[Req]) -> String {
    let mut sorted: Vec<&Req> = reqs.iter().collect();
    sorted.sort_by_key(|r| r.start_seq);
    sorted
        .iter()
        .map(|r| format!("  {}\n", describe_one(r)))
        .collect()
}

fn describe_final(fin: &Final) -> String {
    let mut out = String::new();
    for (id, r) in &fin.probes {
        out.push_str(&format!(
            "  probe {}: lineage {} items {:?}\n",
            short_str(id),
            r.seen.as_deref().unwrap_or("- (no session)"),
            r.values
        ));
    }
    out.push_str(&format!("  (end at t={} ms)\n", fin.end_ms));
    out
}
