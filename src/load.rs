//! [`Load`]: reading the session a request names, before the handler runs.

use std::task::{Context, Poll};

use crate::config::{Config, Lifetime, Times};
use crate::error::StoreError;
use crate::id::SessionId;
use crate::persist::Loaded;
use crate::store::{Items, Meta, Record, SessionStore, StoreFuture, Timestamp};

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
            step: Step::Reading(store.load(&id, now)),
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
                            self.step = Step::Done;
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(record)) => record,
                    };
                    let Some(record) = record else {
                        self.step = Step::Done;
                        return Poll::Ready(Ok(None));
                    };
                    let times = Times {
                        created_at: record.created_at,
                        expires_at: record.expires_at,
                    };
                    let lifetime = Lifetime::of(&record.meta);
                    if lifetime.expiry(config).is_expired(times, self.now) {
                        self.step = Step::DeletingExpired(store.delete(&self.id));
                        continue;
                    }
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
                    if let Err(e) = std::task::ready!(fut.answer(cx.as_deref_mut())) {
                        tracing::warn!(error = %crate::error::Chain(&e), "could not delete an expired session");
                    }
                    self.step = Step::Done;
                    return Poll::Ready(Ok(None));
                }
                Step::Done => {
                    return Poll::Ready(Err(StoreError::other(
                        "the session layer's load step was run after it finished",
                    )))
                }
            }
        }
    }
}
