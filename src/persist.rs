//! [`Persist`]: applying what a request did to its session, after the
//! handler answered, as a small state machine over store calls.
//!
//! Most requests need one store call (save, touch, create) or none. A logout
//! that also wrote needs two (end, then create), and creating or cycling
//! retries on the (astronomically rare) taken id. Each step holds the
//! [`StoreFuture`] it waits on, so an in-process store runs every step in
//! place and a network store is awaited, by the same code.

use std::task::{Context, Poll};

use crate::config::{Config, Lifetime, Times};
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::storage::Outcome;
use crate::store::{
    ChangeSet, CycleOutcome, Items, Keep, Meta, Record, Renewal, SaveOutcome, SessionStore,
    StoreFuture, Timestamp,
};
use crate::telemetry::{self, EndedBy, Event, Op};

/// How many fresh ids to try when creating or cycling hits a taken id.
const ID_TRIES: usize = 4;

/// The stored session a request loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loaded {
    pub(crate) id: SessionId,
    pub(crate) public_id: PublicId,
    pub(crate) times: Times,
    pub(crate) lifetime: Lifetime,
}

/// What the response tells the client about its session id.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdNotice {
    /// Nothing: the client keeps what it has.
    Keep,
    /// The client is to hold `id` (new, cycled, or a refreshed persistent
    /// cookie) until `expires_at`; in a persistent cookie (with `Max-Age`)
    /// when `persistent`.
    Hold {
        id: SessionId,
        expires_at: Timestamp,
        persistent: bool,
    },
    /// The client is to forget its id: the session ended.
    Forget,
    /// The session was gone before this request could write to it (ended
    /// or expired meanwhile): nothing is sent, since the client may already
    /// hold a newer id from a concurrent response, but the handle no longer
    /// reports the dead id.
    Gone,
}

/// The store calls that apply one request's [`Outcome`].
#[derive(Debug)]
pub(crate) struct Persist {
    step: Step,
    /// The capped links this request sets (`with_max_sessions_per_link`):
    /// once the session is written, the oldest sessions past each cap are
    /// ended. Empty (no allocation) for almost every request.
    trims: Vec<Trim>,
}

/// One capped link a request set: `name = value`, at most `cap` sessions.
#[derive(Debug)]
struct Trim {
    name: Box<str>,
    value: Box<str>,
    cap: usize,
}

#[derive(Debug)]
enum Step {
    /// Ending the loaded session (a logout); then creating a new one from
    /// `then` if it sets anything.
    Ending {
        fut: StoreFuture<()>,
        then: ChangeSet,
        now: Timestamp,
    },
    Creating {
        fut: StoreFuture<bool>,
        id: SessionId,
        record: Record,
        tries: usize,
    },
    Cycling {
        fut: StoreFuture<CycleOutcome>,
        new: SessionId,
        changes: ChangeSet,
        tries: usize,
        at: Target,
    },
    Saving {
        fut: StoreFuture<SaveOutcome>,
        at: Target,
    },
    Touching {
        fut: StoreFuture<bool>,
        at: Target,
    },
    /// Ending the oldest sessions past a link's cap, sparing `public_id`
    /// (the one this request wrote); then answering `notice`.
    Trimming {
        fut: StoreFuture<usize>,
        public_id: PublicId,
        notice: IdNotice,
    },
    Done(Option<Result<IdNotice, StoreError>>),
}

/// The loaded session's ids, the write's times, whether the write
/// refreshes the expiry, and what its cookie is to be.
#[derive(Debug, Clone, Copy)]
struct Target {
    id: SessionId,
    public_id: PublicId,
    at: Renewal,
    refresh: bool,
    /// Whether the session's cookie is persistent after this request.
    persistent: bool,
    /// Whether this request changed that, or gave a persistent cookie's
    /// session a new idle timeout: the cookie is then sent again.
    resend: bool,
}

impl Target {
    /// What to tell the client once the session was written: a persistent
    /// cookie is sent again when the expiry moved, so its `Max-Age` follows,
    /// and any cookie is when the request changed its persistence.
    fn notice(self) -> IdNotice {
        if (self.refresh && self.persistent) || self.resend {
            self.hold(self.id)
        } else {
            IdNotice::Keep
        }
    }

    fn hold(self, id: SessionId) -> IdNotice {
        IdNotice::Hold {
            id,
            expires_at: self.at.expires_at,
            persistent: self.persistent,
        }
    }
}

impl Persist {
    /// Starts applying `out` for a request that loaded `loaded` (if any) at
    /// `now`. Whether the store must be reached at all was decided by
    /// [`needs_store`].
    pub(crate) fn start<Store: SessionStore>(
        store: &Store,
        config: &Config,
        loaded: Option<Loaded>,
        out: Outcome,
        now: Timestamp,
    ) -> Self {
        let trims = trims(config, &out.changes);
        let step = match loaded {
            // A logout: end the session wherever it lives now, even if a
            // concurrent request has moved it to a new id meanwhile.
            Some(l) if out.destroyed.is_some() => Step::Ending {
                fut: telemetry::watch(Op::End, store, || store.end(&l.id, &l.public_id)),
                then: out.changes,
                now,
            },
            None => create(store, config, &out.changes, now, IdNotice::Keep),
            Some(l) => {
                let lifetime = l.lifetime.changed_by(&out.changes);
                let expiry = lifetime.expiry(config);
                let expires_at = expiry.next(l.times, now);
                let persistent = lifetime.persistent(config);
                let at = Target {
                    id: l.id,
                    public_id: l.public_id,
                    at: Renewal { now, expires_at },
                    refresh: expiry.refresh_due(l.times, expires_at)
                        || out.changes.sets_idle_timeout(),
                    persistent,
                    resend: persistent != l.lifetime.persistent(config)
                        || (persistent && out.changes.sets_idle_timeout()),
                };
                if out.cycle {
                    let new = SessionId::generate();
                    Step::Cycling {
                        fut: telemetry::watch(Op::Cycle, store, || {
                            store.cycle(&l.id, &new, &out.changes, at.at)
                        }),
                        new,
                        changes: out.changes,
                        tries: 1,
                        at,
                    }
                } else if !out.changes.is_empty() {
                    Step::Saving {
                        fut: telemetry::watch(Op::Save, store, || {
                            store.save(&l.id, &out.changes, at.at)
                        }),
                        at,
                    }
                } else if at.refresh {
                    Step::Touching {
                        fut: telemetry::watch(Op::Touch, store, || store.touch(&l.id, at.at)),
                        at,
                    }
                } else {
                    Step::Done(Some(Ok(IdNotice::Keep)))
                }
            }
        };
        Self { step, trims }
    }

    /// Runs the steps as far as they go. With `cx`, a step that is not done
    /// is polled (and wakes the task when it can go on); without, the steps
    /// run only while each store call has already answered, which is always
    /// the case for an in-process store.
    pub(crate) fn drive<Store: SessionStore>(
        &mut self,
        store: &Store,
        config: &Config,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<IdNotice, StoreError>> {
        loop {
            let Self { step, trims } = self;
            let next = match step {
                Step::Done(result) => {
                    return Poll::Ready(result.take().unwrap_or_else(|| Err(polled_after_done())))
                }
                Step::Ending { fut, then, now } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => failure(Op::End, store, e),
                    Poll::Ready(Ok(())) => {
                        telemetry::count(Event::Destroyed);
                        create(store, config, then, *now, IdNotice::Forget)
                    }
                },
                Step::Creating {
                    fut,
                    id,
                    record,
                    tries,
                } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => failure(Op::Create, store, e),
                    Poll::Ready(Ok(true)) => {
                        telemetry::count(Event::Created);
                        written(
                            store,
                            trims,
                            record.public_id,
                            IdNotice::Hold {
                                id: *id,
                                expires_at: record.expires_at,
                                persistent: Lifetime::of(&record.meta).persistent(config),
                            },
                        )
                    }
                    Poll::Ready(Ok(false)) if *tries < ID_TRIES => {
                        *id = SessionId::generate();
                        *tries += 1;
                        let (id, record) = (&*id, &*record);
                        *fut = telemetry::watch(Op::Create, store, || store.create(id, record));
                        continue;
                    }
                    Poll::Ready(Ok(false)) => failure(Op::Create, store, no_free_id()),
                },
                Step::Cycling {
                    fut,
                    new,
                    changes,
                    tries,
                    at,
                } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => match result {
                        Err(e) => failure(Op::Cycle, store, e),
                        Ok(CycleOutcome::Moved) => {
                            telemetry::count(Event::Cycled);
                            written(store, trims, at.public_id, at.hold(*new))
                        }
                        Ok(CycleOutcome::Deleted) => {
                            telemetry::count(Event::Destroyed);
                            Step::Done(Some(Ok(IdNotice::Forget)))
                        }
                        Ok(CycleOutcome::Gone) => Step::Done(Some(Ok(IdNotice::Gone))),
                        Ok(CycleOutcome::Collision) if *tries < ID_TRIES => {
                            *new = SessionId::generate();
                            *tries += 1;
                            let (new, changes, at) = (&*new, &*changes, *at);
                            *fut = telemetry::watch(Op::Cycle, store, || {
                                store.cycle(&at.id, new, changes, at.at)
                            });
                            continue;
                        }
                        Ok(CycleOutcome::Collision) => failure(Op::Cycle, store, no_free_id()),
                    },
                },
                Step::Saving { fut, at } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => match result {
                        Err(e) => failure(Op::Save, store, e),
                        Ok(SaveOutcome::Saved) => {
                            telemetry::count(Event::Saved);
                            written(store, trims, at.public_id, at.notice())
                        }
                        Ok(SaveOutcome::Deleted) => {
                            telemetry::count(Event::Destroyed);
                            Step::Done(Some(Ok(IdNotice::Forget)))
                        }
                        // Destroyed or expired meanwhile: the changes are
                        // dropped, and no cookie is sent (the client may
                        // already hold a newer one).
                        Ok(SaveOutcome::Gone) => Step::Done(Some(Ok(IdNotice::Gone))),
                    },
                },
                Step::Touching { fut, at } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    // Best effort: the handler's answer stands even if the
                    // refresh fails; the session then expires a little
                    // sooner than it would. Still a store failure: logged
                    // at ERROR and counted like any other.
                    Poll::Ready(Err(e)) => {
                        telemetry::failed(Op::Touch, store.name(), &e);
                        Step::Done(Some(Ok(IdNotice::Keep)))
                    }
                    Poll::Ready(Ok(true)) => {
                        telemetry::count(Event::Refreshed);
                        Step::Done(Some(Ok(at.notice())))
                    }
                    Poll::Ready(Ok(false)) => Step::Done(Some(Ok(IdNotice::Gone))),
                },
                Step::Trimming {
                    fut,
                    public_id,
                    notice,
                } => match fut.answer(cx.as_deref_mut()) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => failure(Op::EndLinked, store, e),
                    Poll::Ready(Ok(ended)) => {
                        telemetry::ended(EndedBy::LinkCap, ended);
                        if ended > 0 {
                            tracing::debug!(ended, "ended the oldest sessions past a link's cap");
                        }
                        written(store, trims, *public_id, *notice)
                    }
                },
            };
            self.step = next;
        }
    }
}

/// Whether applying `out` needs the store at all: a loaded session may need
/// saving or refreshing; a request without one only if it created one.
pub(crate) fn needs_store(loaded: Option<&Loaded>, out: &Outcome) -> bool {
    loaded.is_some() || out.changes.sets_any()
}

/// Creates a session from `changes` when they set anything; otherwise
/// tells the client `otherwise`.
fn create<Store: SessionStore>(
    store: &Store,
    config: &Config,
    changes: &ChangeSet,
    now: Timestamp,
    otherwise: IdNotice,
) -> Step {
    if !changes.sets_any() {
        return Step::Done(Some(Ok(otherwise)));
    }
    let mut items = Items::new();
    items.apply(changes);
    let lifetime = Lifetime::default().changed_by(changes);
    let record = Record {
        items,
        created_at: now,
        expires_at: lifetime.expiry(config).first(now),
        public_id: PublicId::generate(),
        meta: Meta::new().applied(changes),
    };
    let id = SessionId::generate();
    Step::Creating {
        fut: telemetry::watch(Op::Create, store, || store.create(&id, &record)),
        id,
        record,
        tries: 1,
    }
}

/// The capped links `changes` sets.
fn trims(config: &Config, changes: &ChangeSet) -> Vec<Trim> {
    if config.link_caps.is_empty() {
        return Vec::new();
    }
    changes
        .links()
        .filter_map(|(name, value)| {
            Some(Trim {
                cap: config.link_cap(name)?,
                name: name.into(),
                value: value?.into(),
            })
        })
        .collect()
}

/// The session `public_id` was written and the client is to be told
/// `notice`: first end the sessions past the caps of the links it set.
fn written<Store: SessionStore>(
    store: &Store,
    trims: &mut Vec<Trim>,
    public_id: PublicId,
    notice: IdNotice,
) -> Step {
    match trims.pop() {
        None => Step::Done(Some(Ok(notice))),
        Some(t) => Step::Trimming {
            fut: telemetry::watch(Op::EndLinked, store, || {
                store.end_linked(
                    &t.name,
                    &t.value,
                    Keep {
                        session: Some(public_id),
                        newest: t.cap - 1,
                    },
                )
            }),
            public_id,
            notice,
        },
    }
}

/// A failed step: logged and counted once here, then the request's answer.
#[cold]
fn failure<Store: SessionStore>(op: Op, store: &Store, e: StoreError) -> Step {
    telemetry::failed(op, store.name(), &e);
    Step::Done(Some(Err(e)))
}

fn no_free_id() -> StoreError {
    StoreError::other(format!(
        "no free session id after {ID_TRIES} tries: the store reports every new id as taken"
    ))
}

fn polled_after_done() -> StoreError {
    let e = StoreError::other("the session layer's save step was run after it finished");
    tracing::error!(target: telemetry::TARGET, error = %crate::error::Chain(&e), "session layer bug");
    e
}
