//! [`Load`]: reading the session a request names, before the handler runs.

use std::task::{Context, Poll};

use crate::config::{Config, Lifetime, Times};
use crate::error::StoreError;
use crate::id::SessionId;
use crate::persist::Loaded;
use crate::store::{Items, Meta, Record, SessionStore, StoreFuture, Timestamp};
use crate::telemetry::{self, LoadOutcome, Op};

/// What a load found: the session, its items and its links, or nothing
/// (unknown id, or a session that had expired and was deleted).
pub(crate) type Found = Option<(Loaded, Items, Meta)>;

/// Loading one session: read it; if it has expired, delete it and report it
/// absent.
#[derive(Debug)]
pub(crate) struct Load {
    id: SessionId,
    now: Timestamp,
    step: Step,
}

#[derive(Debug)]
enum Step {
    Reading(StoreFuture<Option<Record>>),
    DeletingExpired(StoreFuture<()>),
    Done,
}

impl Load {
    pub(crate) fn start<Store: SessionStore>(store: &Store, id: SessionId, now: Timestamp) -> Self {
        Self {
            id,
            now,
            step: Step::Reading(telemetry::watch(Op::Load, store, || store.load(&id, now))),
        }
    }

    /// When the session was loaded: the request's "now".
    pub(crate) fn now(&self) -> Timestamp {
        self.now
    }

    /// Runs the load as far as it goes: with `cx`, polling; without, only
    /// while the store has already answered (see
    /// [`Persist::drive`](crate::persist::Persist::drive)).
    pub(crate) fn drive<Store: SessionStore>(
        &mut self,
        store: &Store,
        config: &Config,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Found, StoreError>> {
        loop {
            match &mut self.step {
                Step::Reading(fut) => {
                    let record = match fut.answer(cx.as_deref_mut()) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => {
                            telemetry::failed(Op::Load, store.name(), &e);
                            self.step = Step::Done;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(record)) => record,
                    };
                    let Some(record) = record else {
                        telemetry::loaded(LoadOutcome::NotFound);
                        self.step = Step::Done;
                        return Poll::Ready(Ok(None));
                    };
                    let times = Times {
                        created_at: record.created_at,
                        expires_at: record.expires_at,
                    };
                    let lifetime = Lifetime::of(&record.meta);
                    if lifetime.expiry(config).is_expired(times, self.now) {
                        telemetry::loaded(LoadOutcome::Expired);
                        let id = self.id;
                        self.step =
                            Step::DeletingExpired(telemetry::watch(Op::Delete, store, || {
                                store.delete(&id)
                            }));
                        continue;
                    }
                    telemetry::loaded(LoadOutcome::Found);
                    self.step = Step::Done;
                    let loaded = Loaded {
                        id: self.id,
                        public_id: record.public_id,
                        times,
                        lifetime,
                    };
                    return Poll::Ready(Ok(Some((loaded, record.items, record.meta))));
                }
                Step::DeletingExpired(fut) => {
                    // Treated as absent either way: the load's answer stands.
                    if let Err(e) = std::task::ready!(fut.answer(cx.as_deref_mut())) {
                        telemetry::failed(Op::Delete, store.name(), &e);
                    }
                    self.step = Step::Done;
                    return Poll::Ready(Ok(None));
                }
                Step::Done => {
                    let e = StoreError::other(
                        "the session layer's load step was run after it finished",
                    );
                    telemetry::failed(Op::Load, store.name(), &e);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}
