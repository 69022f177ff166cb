//! [`ResponseFuture`], the future of [`SessionService`](crate::SessionService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::error::StoreError;
use crate::service::{after_inner, complete, CookieAction, Direct, Next};
use crate::store::now_millis;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`SessionService`](crate::SessionService).
    ///
    /// The inner service's future runs in place. With an in-process store
    /// (one that [answers immediately](crate::SessionStore::answers_immediately),
    /// like [`MemoryStore`](crate::MemoryStore)), loading and saving run in
    /// place too: no allocation for the future. With a networked store, a
    /// request that carries an id runs load, inner service and save as one
    /// boxed future, and one without an id boxes only a save, if it writes.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Direct {
            #[pin]
            fut: F,
            ctx: Option<Direct>,
        },
        Saving {
            fut: BoxFuture<Result<CookieAction, StoreError>>,
            res: Option<Response<B>>,
            ctx: Option<Direct>,
            now: u64,
        },
        Boxed {
            fut: BoxFuture<Result<Response<B>, E>>,
        },
        Ready {
            res: Option<Response<B>>,
        },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn direct(fut: F, ctx: Direct) -> Self {
        Self {
            kind: Kind::Direct {
                fut,
                ctx: Some(ctx),
            },
        }
    }

    pub(crate) fn boxed(
        fut: impl Future<Output = Result<Response<B>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Boxed { fut: Box::pin(fut) },
        }
    }

    pub(crate) fn ready(res: Response<B>) -> Self {
        Self {
            kind: Kind::Ready { res: Some(res) },
        }
    }
}

const DONE: &str = "ResponseFuture polled after completion";

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        loop {
            match kind.as_mut().project() {
                KindProj::Boxed { fut } => return fut.as_mut().poll(cx),
                KindProj::Ready { res } => return Poll::Ready(Ok(res.take().expect(DONE))),
                KindProj::Direct { fut, ctx } => {
                    let result = ready!(fut.poll(cx));
                    let d = ctx.take().expect(DONE);
                    let res = match result {
                        Ok(res) => res,
                        Err(e) => {
                            d.session.finish();
                            return Poll::Ready(Err(e));
                        }
                    };
                    let config = d.saver.config();
                    let (res, out) = match after_inner(config, &d.session, res, d.grpc) {
                        Next::Respond(res) => return Poll::Ready(Ok(res)),
                        Next::Persist(res, out) => (res, out),
                    };
                    if !d.needs_store(&out) {
                        return Poll::Ready(Ok(res));
                    }
                    let now = d.now.unwrap_or_else(now_millis);
                    if d.saver.immediate() {
                        let result = d.saver.persist_now(d.loaded, out, now);
                        let res = complete(config, &d.session, res, result, now, d.grpc);
                        return Poll::Ready(Ok(res));
                    }
                    let fut = d.saver.clone().persist_boxed(d.loaded, out, now);
                    kind.set(Kind::Saving {
                        fut,
                        res: Some(res),
                        ctx: Some(d),
                        now,
                    });
                }
                KindProj::Saving { fut, res, ctx, now } => {
                    let result = ready!(fut.as_mut().poll(cx));
                    let (res, d) = (res.take().expect(DONE), ctx.take().expect(DONE));
                    let res = complete(d.saver.config(), &d.session, res, result, *now, d.grpc);
                    return Poll::Ready(Ok(res));
                }
            }
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
