//! [`Faulty`]: a [`SessionStore`] wrapper that delays each call and fails
//! some of them, driven by the history's seed.
//!
//! Most faults are injected **before** the call is forwarded, so a failed
//! call changed nothing: that is what lets the oracle say "a request that
//! got a 5xx persisted nothing". Some are injected **after** the inner call
//! was applied (as a Redis command that times out after it ran): those are
//! counted apart, and the oracle treats their requests as possibly having
//! done what they asked. Delays are taken both before forwarding and after
//! the inner call answered (the effect is applied, the caller learns of it
//! later), so the moment a call takes effect and the moment its request
//! answers move independently.
//!
//! The registry's calls (`list`, `end_linked`, `end_public`) go through the
//! same machinery: a fault before forwarding means the call ended nothing,
//! one after it means it was applied (counted apart, per request, so the
//! oracle can tell a failed `end_all` that did nothing from one that may
//! have ended sessions).
//!
//! Every call is written to the history's event log, tagged with the
//! request it belongs to (a task-local set by the runner), so a failing
//! history prints the store calls in the order they happened.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, StoreFuture, Timestamp,
};
use tower_session_storage::{PublicId, SessionId, SessionStore, StoreError};

use super::{short, Events, Rng};

tokio::task_local! {
    /// The op number of the request whose future is being polled.
    pub(crate) static REQUEST: u64;
}

/// The request a store call belongs to (0: none, e.g. the final probes).
fn current_request() -> u64 {
    REQUEST.try_with(|r| *r).unwrap_or(0)
}

/// How a history's store misbehaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultPlan {
    /// Chance per store call (per mille) of failing before forwarding.
    pub(crate) fault_per_mille: u64,
    /// Chance per store call (per mille) of failing after the inner call
    /// was applied.
    pub(crate) applied_fault_per_mille: u64,
    /// Upper bound of each random delay, in microseconds (0: no delays).
    pub(crate) max_delay_us: u64,
    /// Chance per store call (per mille) of a long stall (`stall`) before
    /// forwarding: the call then lands after the session may have expired.
    pub(crate) stall_per_mille: u64,
    pub(crate) stall: Duration,
    /// No delays: every call the inner store answers at once is answered
    /// with a ready `StoreFuture` (faults included), so the layer runs the
    /// store calls in place, its other code path.
    pub(crate) immediate: bool,
}

/// Counters over one history.
#[derive(Default, Debug)]
pub(crate) struct CallStats {
    pub(crate) calls: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) applied_faults: AtomicU64,
    pub(crate) stalls: AtomicU64,
}

/// What the wrapper shares with the runner.
pub(crate) struct Control {
    plan: FaultPlan,
    rng: Mutex<Rng>,
    pub(crate) stats: CallStats,
    /// Every id the store was asked about or handed (create, cycle's new
    /// id, load, ...): the end-of-history scan looks at all of them.
    pub(crate) ids: Mutex<HashSet<SessionId>>,
    /// Per request: the faults injected into its calls.
    pub(crate) faulted: Mutex<std::collections::HashMap<u64, FaultCount>>,
    /// Invariant 4: `len()` of a capped memory store after every call.
    cap: Option<(usize, Arc<dyn Fn() -> usize + Send + Sync>)>,
    pub(crate) cap_violations: Mutex<Vec<String>>,
    events: Events,
}

impl Control {
    pub(crate) fn new(
        plan: FaultPlan,
        seed: u64,
        cap: Option<(usize, Arc<dyn Fn() -> usize + Send + Sync>)>,
        events: Events,
    ) -> Arc<Self> {
        Arc::new(Self {
            plan,
            rng: Mutex::new(Rng::new(seed)),
            stats: CallStats::default(),
            ids: Mutex::new(HashSet::new()),
            faulted: Mutex::new(Default::default()),
            cap,
            cap_violations: Mutex::new(Vec::new()),
            events,
        })
    }
}

/// The faults injected into one request's store calls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultCount {
    /// All of them, before or after forwarding.
    pub(crate) all: u32,
    /// Before forwarding, into a call whose failure fails the request
    /// (`load`, `create`, `save`, `cycle`, `end`; the layer shrugs off a
    /// failed `touch`, or `delete` of an expired session).
    pub(crate) fatal_before: u32,
    /// After the inner call was applied.
    pub(crate) after: u32,
    /// Of `fatal_before`, the ones into a registry call (`list`,
    /// `end_linked`, `end_public`): that call ended nothing.
    pub(crate) registry_before: u32,
    /// Of `after`, the ones into a registry call: that call was applied.
    pub(crate) registry_after: u32,
}

/// Whether the call named `what` (as logged) is one of the registry's.
fn is_registry(what: &str) -> bool {
    what.starts_with("list(") || what.starts_with("end_linked(") || what.starts_with("end_public(")
}

/// The wrapper. `inner` is the real store. Clones share the store and
/// the control.
pub(crate) struct Faulty<S> {
    pub(crate) inner: Arc<S>,
    pub(crate) ctl: Arc<Control>,
}

impl<S> Clone for Faulty<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            ctl: self.ctl.clone(),
        }
    }
}

/// What to do with one call.
#[derive(Clone, Copy)]
struct Decision {
    fault: bool,
    fail_after: bool,
    before: Duration,
    after: Duration,
}

impl<S> Faulty<S> {
    fn decide(&self) -> Decision {
        let p = &self.ctl.plan;
        let mut rng = self.ctl.rng.lock().unwrap();
        let fault = rng.chance(p.fault_per_mille);
        let fail_after = !fault && rng.chance(p.applied_fault_per_mille);
        let mut before = Duration::ZERO;
        let mut after = Duration::ZERO;
        if !p.immediate && p.max_delay_us > 0 {
            // Zero a third of the time, so some calls run back to back.
            if rng.below(3) > 0 {
                before = Duration::from_micros(rng.below(p.max_delay_us + 1));
            }
            if rng.below(3) > 0 {
                after = Duration::from_micros(rng.below(p.max_delay_us + 1));
            }
        }
        if !p.immediate && rng.chance(p.stall_per_mille) {
            before += p.stall;
            self.ctl.stats.stalls.fetch_add(1, Ordering::Relaxed);
        }
        Decision {
            fault,
            fail_after,
            before,
            after,
        }
    }
}

impl Control {
    /// Every call: count it and remember its ids.
    fn arrive(&self, ids: &[SessionId]) {
        self.ids.lock().unwrap().extend(ids.iter().copied());
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Before forwarding (after the delay): the fault, if any.
    fn enter(&self, d: Decision, what: &str) -> Result<(), StoreError> {
        if d.fault {
            let req = current_request();
            self.stats.faults.fetch_add(1, Ordering::Relaxed);
            {
                let mut f = self.faulted.lock().unwrap();
                let e = f.entry(req).or_default();
                e.all += 1;
                if !(what.starts_with("touch") || what.starts_with("delete")) {
                    e.fatal_before += 1;
                }
                if is_registry(what) {
                    e.registry_before += 1;
                }
            }
            self.events.push(format!(
                "  #{req} store {what}: INJECTED FAULT (nothing forwarded)"
            ));
            return Err(StoreError::unavailable("injected fault (model test)"));
        }
        Ok(())
    }

    /// After the inner call answered: log it and check the cap.
    fn answered(&self, what: String) {
        let req = current_request();
        self.events.push(format!("  #{req} store {what}"));
        if let Some((cap, len)) = &self.cap {
            let n = len();
            let mut found = self.cap_violations.lock().unwrap();
            // The first one tells the story; the store stays over its cap.
            if n > *cap && found.is_empty() {
                found.push(format!(
                    "invariant 4: the memory store holds {n} sessions, over its cap of {cap}, \
                     after `{what}` of request #{req} (first time seen)"
                ));
            }
        }
    }

    /// After the inner call (and the delay after it): the fault after the
    /// fact, if any.
    fn leave(&self, d: Decision, registry: bool) -> Result<(), StoreError> {
        if d.fail_after {
            let req = current_request();
            self.stats.applied_faults.fetch_add(1, Ordering::Relaxed);
            {
                let mut f = self.faulted.lock().unwrap();
                let e = f.entry(req).or_default();
                e.all += 1;
                e.after += 1;
                if registry {
                    e.registry_after += 1;
                }
            }
            self.events
                .push(format!("  #{req} store: APPLIED, THEN INJECTED FAULT"));
            return Err(StoreError::unavailable(
                "injected fault after the call was applied (model test)",
            ));
        }
        Ok(())
    }
}

fn res<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("Err({e})"),
    }
}

impl<S: SessionStore> Faulty<S> {
    /// One call: `what` names it in the log, `ids` are the ids it is about,
    /// `call` forwards it to the inner store and `describe` names its answer.
    ///
    /// With no delay to add and an inner store that answered at once, the
    /// answer (or the injected fault) is a ready `StoreFuture`: the layer's
    /// in-place path. Otherwise an owned future that sleeps, forwards and
    /// answers.
    fn call<T, C, D>(&self, what: String, ids: &[SessionId], call: C, describe: D) -> StoreFuture<T>
    where
        T: Send + 'static,
        C: FnOnce(&S) -> StoreFuture<T> + Send + 'static,
        D: FnOnce(&Result<T, StoreError>) -> String + Send + 'static,
    {
        let d = self.decide();
        let registry = is_registry(&what);
        self.ctl.arrive(ids);
        let ctl = self.ctl.clone();
        if d.before.is_zero() {
            if let Err(e) = ctl.enter(d, &what) {
                return StoreFuture::ready(Err(e));
            }
            return match call(&self.inner).into_ready() {
                // The inner store answered at once: the in-place path.
                Ok(r) => {
                    ctl.answered(describe(&r));
                    if d.after.is_zero() {
                        return StoreFuture::ready(ctl.leave(d, registry).and(r));
                    }
                    StoreFuture::new(async move {
                        tokio::time::sleep(d.after).await;
                        ctl.leave(d, registry)?;
                        r
                    })
                }
                Err(fut) => StoreFuture::new(async move {
                    let r = fut.await;
                    ctl.answered(describe(&r));
                    if !d.after.is_zero() {
                        tokio::time::sleep(d.after).await;
                    }
                    ctl.leave(d, registry)?;
                    r
                }),
            };
        }
        let inner = self.inner.clone();
        StoreFuture::new(async move {
            tokio::time::sleep(d.before).await;
            ctl.enter(d, &what)?;
            let r = call(&inner).await;
            ctl.answered(describe(&r));
            if !d.after.is_zero() {
                tokio::time::sleep(d.after).await;
            }
            ctl.leave(d, registry)?;
            r
        })
    }
}

impl<S: SessionStore> SessionStore for Faulty<S> {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        let id = *id;
        self.call(
            format!("load({})", short(&id)),
            &[id],
            move |s| s.load(&id, now),
            move |r| match r {
                Ok(Some(rec)) => format!(
                    "load({}) -> found, lineage {}",
                    short(&id),
                    rec.items.get(super::MARKER).unwrap_or("-")
                ),
                other => format!("load({}) -> {}", short(&id), res(other)),
            },
        )
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        let (id, record) = (*id, record.clone());
        self.call(
            format!("create({})", short(&id)),
            &[id],
            move |s| s.create(&id, &record),
            move |r| format!("create({}) -> {}", short(&id), res(r)),
        )
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        let (id, changes) = (*id, changes.clone());
        self.call(
            format!("save({})", short(&id)),
            &[id],
            move |s| s.save(&id, &changes, at),
            move |r| format!("save({}) -> {}", short(&id), res(r)),
        )
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        let (old, new, changes) = (*old, *new, changes.clone());
        let what = format!("cycle({} -> {})", short(&old), short(&new));
        let named = what.clone();
        self.call(
            what,
            &[old, new],
            move |s| s.cycle(&old, &new, &changes, at),
            move |r| format!("{named} -> {}", res(r)),
        )
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        let id = *id;
        self.call(
            format!("delete({})", short(&id)),
            &[id],
            move |s| s.delete(&id),
            move |r| format!("delete({}) -> {}", short(&id), res(r)),
        )
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        let (id, public_id) = (*id, *public_id);
        self.call(
            format!("end({})", short(&id)),
            &[id],
            move |s| s.end(&id, &public_id),
            move |r| format!("end({}) -> {}", short(&id), res(r)),
        )
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        let id = *id;
        self.call(
            format!("touch({})", short(&id)),
            &[id],
            move |s| s.touch(&id, at),
            move |r| format!("touch({}) -> {}", short(&id), res(r)),
        )
    }
    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let (name, value) = (name.to_owned(), value.to_owned());
        let what = format!("list({name}={value})");
        let named = what.clone();
        self.call(
            what,
            &[],
            move |s| s.list(&name, &value, now, limit),
            move |r| match r {
                Ok(l) => format!("{named} -> {} listed", l.len()),
                Err(e) => format!("{named} -> Err({e})"),
            },
        )
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let (name, value) = (name.to_owned(), value.to_owned());
        let what = format!(
            "end_linked({name}={value}, keep {})",
            keep.session.map_or("-".to_owned(), |p| short_public(&p))
        );
        let named = what.clone();
        self.call(
            what,
            &[],
            move |s| s.end_linked(&name, &value, keep),
            move |r| format!("{named} -> {}", res(r)),
        )
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let public_id = *public_id;
        let what = format!("end_public({})", short_public(&public_id));
        let named = what.clone();
        self.call(
            what,
            &[],
            move |s| s.end_public(&public_id),
            move |r| format!("{named} -> {}", res(r)),
        )
    }
}

/// The first 8 characters of a public id.
pub(crate) fn short_public(p: &PublicId) -> String {
    let s = p.to_string();
    s[..s.len().min(8)].to_owned()
}
