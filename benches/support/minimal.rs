//! A deliberately minimal session layer, the floor the real layers are
//! measured against (shared by `benches/session.rs` and `examples/load.rs`).
//!
//! Per request it scans the `Cookie` header for `id=`, parses the UUID, does
//! one `DashMap` look-up that clones an `Arc<str>` (the session's whole
//! data), and puts one `Arc` handle into the request's extensions. After the
//! handler, a write is one map insert; a write without a session creates
//! one: a fresh UUID, a map insert and a `Set-Cookie`. No expiry, no caps, no
//! change sets, no id cycling, no error handling: not a usable session layer,
//! only the least work any cookie-and-map session layer has to do.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use dashmap::DashMap;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use uuid::Uuid;

type Map = Arc<DashMap<Uuid, Arc<str>>>;

/// The layer: one shared map.
#[derive(Clone, Debug, Default)]
pub(crate) struct MinimalLayer {
    map: Map,
}

impl MinimalLayer {
    /// A layer with an empty map.
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl<S> tower_layer::Layer<S> for MinimalLayer {
    type Service = MinimalService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MinimalService {
            inner,
            map: self.map.clone(),
        }
    }
}

/// The service.
#[derive(Clone, Debug)]
pub(crate) struct MinimalService<S> {
    inner: S,
    map: Map,
}

/// The handle a handler finds in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct MinimalSession(Arc<Handle>);

#[derive(Debug)]
struct Handle {
    id: Option<Uuid>,
    data: Mutex<Option<Arc<str>>>,
    written: Mutex<bool>,
}

impl MinimalSession {
    /// The session's data (one string), if any.
    pub(crate) fn get(&self) -> Option<Arc<str>> {
        self.0
            .data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the session's data; saved after the handler.
    pub(crate) fn set(&self, value: &str) {
        *self.0.data.lock().unwrap_or_else(|p| p.into_inner()) = Some(value.into());
        *self.0.written.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }
}

/// The id in `id=<uuid>`, scanning every `Cookie` field.
fn find_id(headers: &http::HeaderMap) -> Option<Uuid> {
    headers.get_all(COOKIE).iter().find_map(|field| {
        field.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let v = pair.strip_prefix(b"id=")?;
            Uuid::try_parse_ascii(v).ok()
        })
    })
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for MinimalService<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = MinimalFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let id = find_id(req.headers());
        let data = id.and_then(|id| self.map.get(&id).map(|d| d.value().clone()));
        let id = id.filter(|_| data.is_some());
        let handle = MinimalSession(Arc::new(Handle {
            id,
            data: Mutex::new(data),
            written: Mutex::new(false),
        }));
        req.extensions_mut().insert(handle.clone());
        MinimalFuture {
            fut: self.inner.call(req),
            after: Some((handle, self.map.clone())),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future: the inner future, then the save.
    pub(crate) struct MinimalFuture<F> {
        #[pin]
        fut: F,
        after: Option<(MinimalSession, Map)>,
    }
}

impl<F, B, E> Future for MinimalFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.fut.poll(cx))?;
        let Some((session, map)) = this.after.take() else {
            return Poll::Ready(Ok(res));
        };
        let h = &session.0;
        if !*h.written.lock().unwrap_or_else(|p| p.into_inner()) {
            return Poll::Ready(Ok(res));
        }
        let Some(data) = h.data.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Poll::Ready(Ok(res));
        };
        match h.id {
            Some(id) => {
                map.insert(id, data);
            }
            None => {
                let id = Uuid::new_v4();
                map.insert(id, data);
                let mut buf = Uuid::encode_buffer();
                let cookie = format!(
                    "id={}; HttpOnly; SameSite=Lax; Secure; Path=/",
                    id.hyphenated().encode_lower(&mut buf)
                );
                if let Ok(v) = HeaderValue::try_from(cookie) {
                    res.headers_mut().append(SET_COOKIE, v);
                }
            }
        }
        Poll::Ready(Ok(res))
    }
}
