//! [`ResponseFuture`], the future of [`SessionService`](crate::SessionService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::error::StoreError;
use crate::service::{after_inner, complete, creates, CookieAction, Next, Saver};
use crate::storage::SessionStorage;
use crate::store::now_millis;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`SessionService`](crate::SessionService).
    ///
    /// A request without a session id runs the inner service's future in
    /// place (no allocation, no store access unless the handler writes); a
    /// request with an id runs load, inner service and save as one boxed
    /// future.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

/// What a request without an id needs once its inner future is done.
struct Direct {
    session: SessionStorage,
    saver: Arc<dyn Saver>,
    grpc: bool,
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Direct {
            #[pin]
            fut: F,
            ctx: Option<Direct>,
        },
        Creating {
            fut: BoxFuture<Result<CookieAction, StoreError>>,
            res: Option<Response<B>>,
            ctx: Option<Direct>,
            now: u64,
        },
        Boxed {
            fut: BoxFuture<Result<Response<B>, E>>,
        },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn direct(
        fut: F,
        session: SessionStorage,
        saver: Arc<dyn Saver>,
        grpc: bool,
    ) -> Self {
        Self {
            kind: Kind::Direct {
                fut,
                ctx: Some(Direct {
                    session,
                    saver,
                    grpc,
                }),
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
}

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
                KindProj::Direct { fut, ctx } => {
                    let result = ready!(fut.poll(cx));
                    let Some(d) = ctx.take() else {
                        panic!("ResponseFuture polled after completion");
                    };
                    let res = match result {
                        Ok(res) => res,
                        Err(e) => {
                            d.session.finish();
                            return Poll::Ready(Err(e));
                        }
                    };
                    let (res, out) = match after_inner(d.saver.config(), &d.session, res, d.grpc) {
                        Next::Respond(res) => return Poll::Ready(Ok(res)),
                        Next::Persist(res, out) => (res, out),
                    };
                    if !creates(&out) {
                        return Poll::Ready(Ok(res));
                    }
                    let now = now_millis();
                    let fut = d.saver.clone().create_boxed(out, now);
                    kind.set(Kind::Creating {
                        fut,
                        res: Some(res),
                        ctx: Some(d),
                        now,
                    });
                }
                KindProj::Creating { fut, res, ctx, now } => {
                    let result = ready!(fut.as_mut().poll(cx));
                    let (Some(res), Some(d)) = (res.take(), ctx.take()) else {
                        panic!("ResponseFuture polled after completion");
                    };
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
