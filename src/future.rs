//! [`ResponseFuture`]: one request's life, as one state machine.
//!
//! ```text
//!            call()                         poll()
//!   ┌──────────────────────┐
//!   │ no id in the request ├──────────────────────────────┐
//!   └──────────────────────┘                              ▼
//!   Loading ── store answered at once? ── yes ──────▶ Calling ──▶ Saving ──▶ Done
//!      │ no (a network store)                           ▲  │ nothing to save    ▲
//!      └── poll the load ───────────────────────────────┘  └────────────────────┘
//! ```
//!
//! `SessionService::call` starts every request in `Loading` and runs the
//! load in place as far as the store has already answered; an in-process
//! store always has, so the machine leaves `call` in `Calling` and the whole
//! request allocates nothing but the handle. A network store's load is
//! polled here. Saving works the same way: the [`Persist`] steps run in the
//! first poll after the handler if the store answers at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::config::{Config, Shared};
use crate::error::StoreError;
use crate::load::{Found, Load};
use crate::persist::{needs_store, IdNotice, Loaded, Persist};
use crate::respond::{after_inner, clear_cookie, complete, hint_if_dropped, load_failed, Facts};
use crate::storage::SessionStorage;
use crate::store::{SessionStore, Timestamp};

pin_project! {
    /// The response future of [`SessionService`](crate::SessionService):
    /// load the session, call the inner service, save what it did, tell the
    /// client.
    ///
    /// With an in-process store such as [`MemoryStore`](crate::MemoryStore)
    /// nothing is boxed: the store answers at once and every step runs in
    /// place. With a network store, each store call is one boxed future.
    pub struct ResponseFuture<S, ReqBody, Store>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, S::Future, ReqBody, S::Response>,
        shared: Arc<Shared<Store>>,
        facts: Facts,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, ReqBody, Res> {
        /// Waiting for a network store's load; the inner service (the one
        /// that was made ready) and the request wait with it, boxed: only a
        /// network store gets here, and the future stays small for the
        /// in-process path.
        Loading {
            waiting: Box<Waiting<S, ReqBody>>,
        },
        /// The inner service is answering.
        Calling {
            #[pin]
            fut: F,
            session: Option<SessionStorage>,
            loaded: Option<Loaded>,
            now: Option<Timestamp>,
        },
        /// Waiting for a network store to apply what the request did.
        Saving {
            persist: Box<Persist>,
            res: Option<Res>,
            session: Option<SessionStorage>,
            now: Timestamp,
        },
        /// The response is known without the inner service (a failed load).
        Answered {
            res: Option<Res>,
        },
        Done,
    }
}

/// What waits for a network store's load.
struct Waiting<S, ReqBody> {
    load: Load,
    inner: Option<S>,
    req: Option<Request<ReqBody>>,
}

const POLLED_AFTER_DONE: &str = "ResponseFuture polled after completion";

impl<S, ReqBody, Store, ResBody> ResponseFuture<S, ReqBody, Store>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    Store: SessionStore,
    ResBody: Default,
{
    /// Starts a request: `id` is the session id it carries, if any.
    pub(crate) fn start(
        inner: &mut S,
        req: Request<ReqBody>,
        shared: Arc<Shared<Store>>,
        id: Option<crate::SessionId>,
        facts: Facts,
    ) -> Self {
        let grpc = facts.grpc;
        let state = match id {
            None => call_inner(inner, req, &shared, None, None),
            Some(id) => {
                let mut load = Load::start(&*shared.store, id, Timestamp::now());
                match load.drive(&*shared.store, &shared.config, None) {
                    Poll::Ready(Ok(found)) => {
                        call_inner(inner, req, &shared, found, Some(load.now()))
                    }
                    Poll::Ready(Err(e)) => State::Answered {
                        res: Some(load_failed(e, grpc)),
                    },
                    Poll::Pending => {
                        // The inner service is called after an await: take
                        // the one that was driven to readiness and leave a
                        // clone in its place,
                        // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                        let clone = inner.clone();
                        State::Loading {
                            waiting: Box::new(Waiting {
                                load,
                                inner: Some(std::mem::replace(inner, clone)),
                                req: Some(req),
                            }),
                        }
                    }
                }
            }
        };
        Self {
            state,
            shared,
            facts,
        }
    }
}

/// Puts the handle into the request's extensions and calls the inner
/// service.
fn call_inner<S, ReqBody, Store>(
    inner: &mut S,
    mut req: Request<ReqBody>,
    shared: &Shared<Store>,
    found: Found,
    now: Option<Timestamp>,
) -> State<S, S::Future, ReqBody, S::Response>
where
    S: Service<Request<ReqBody>>,
{
    let config = &shared.config;
    let (loaded, base) = match found {
        Some((loaded, items, meta)) => (Some(loaded), Some((items, meta))),
        None => (None, None),
    };
    let session = SessionStorage::new(
        loaded.map(|l| (l.id, l.public_id)),
        base,
        config.max_items,
        config.max_bytes,
    );
    let extensions = req.extensions_mut();
    extensions.insert(session.clone());
    extensions.insert(shared.registry.clone());
    State::Calling {
        fut: inner.call(req),
        session: Some(session),
        loaded,
        now,
    }
}

impl<S, ReqBody, Store, ResBody> Future for ResponseFuture<S, ReqBody, Store>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    Store: SessionStore,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        let shared = &**this.shared;
        let facts = &*this.facts;
        let (store, config, grpc) = (&*shared.store, &shared.config, facts.grpc);
        loop {
            match state.as_mut().project() {
                StateProj::Loading { waiting } => {
                    let Waiting { load, inner, req } = &mut **waiting;
                    let result = ready!(load.drive(store, config, Some(cx)));
                    let next = match (result, inner.take(), req.take()) {
                        (Ok(found), Some(mut inner), Some(req)) => {
                            call_inner(&mut inner, req, shared, found, Some(load.now()))
                        }
                        (Err(e), _, _) => State::Answered {
                            res: Some(load_failed(e, grpc)),
                        },
                        _ => panic!("{POLLED_AFTER_DONE}"),
                    };
                    state.set(next);
                }
                StateProj::Calling {
                    fut,
                    session,
                    loaded,
                    now,
                } => {
                    let result = ready!(fut.poll(cx));
                    let Some(session) = session.take() else {
                        panic!("{POLLED_AFTER_DONE}")
                    };
                    let (loaded, now) = (*loaded, *now);
                    let mut res = match result {
                        Ok(res) => res,
                        Err(e) => {
                            session.finish();
                            state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                    };
                    let out = match after_inner(config, &session, &mut res, grpc) {
                        Some(out) if needs_store(loaded.as_ref(), &out) => out,
                        _ => {
                            if facts.clear_cookie && !res.status().is_server_error() {
                                clear_cookie(config, &mut res);
                            }
                            state.set(State::Done);
                            return Poll::Ready(Ok(res));
                        }
                    };
                    let now = now.unwrap_or_else(Timestamp::now);
                    let mut persist = Persist::start(store, config, loaded, out, now);
                    // An in-process store is done here, in this poll; only a
                    // network store's steps wait, boxed, in `Saving`.
                    match persist.drive(store, config, Some(cx)) {
                        Poll::Ready(result) => {
                            let res = respond(config, facts, &session, res, result, now);
                            state.set(State::Done);
                            return Poll::Ready(Ok(res));
                        }
                        Poll::Pending => state.set(State::Saving {
                            persist: Box::new(persist),
                            res: Some(res),
                            session: Some(session),
                            now,
                        }),
                    }
                    return Poll::Pending;
                }
                StateProj::Saving {
                    persist,
                    res,
                    session,
                    now,
                } => {
                    let result = ready!(persist.drive(store, config, Some(cx)));
                    let (Some(res), Some(session)) = (res.take(), session.take()) else {
                        panic!("{POLLED_AFTER_DONE}")
                    };
                    let res = respond(config, facts, &session, res, result, *now);
                    state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Answered { res } => {
                    let Some(res) = res.take() else {
                        panic!("{POLLED_AFTER_DONE}")
                    };
                    state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Done => panic!("{POLLED_AFTER_DONE}"),
            }
        }
    }
}

/// The response once the store calls are done: the id told to the client
/// (or the store failure's response), a malformed cookie cleared, the
/// debug hint.
fn respond<B: Default>(
    config: &Config,
    facts: &Facts,
    session: &SessionStorage,
    res: Response<B>,
    result: Result<IdNotice, StoreError>,
    now: Timestamp,
) -> Response<B> {
    let mut res = complete(config, session, res, result, now, facts.grpc);
    if facts.clear_cookie && !res.status().is_server_error() {
        clear_cookie(config, &mut res);
    }
    hint_if_dropped(config, facts, &res);
    res
}

impl<S, ReqBody, Store> fmt::Debug for ResponseFuture<S, ReqBody, Store>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Loading { .. } => "loading",
            State::Calling { .. } => "calling",
            State::Saving { .. } => "saving",
            State::Answered { .. } | State::Done => "answered",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
