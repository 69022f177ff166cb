//! [`SessionService`]: where a request enters the layer. It reads the
//! session id from the request and hands the rest of the request's life to
//! [`ResponseFuture`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{Entry, COOKIE};
use http::{Request, Response};
use tower_service::Service;

use crate::config::Shared;
use crate::cookie;
use crate::future::ResponseFuture;
use crate::grpc::is_grpc;
use crate::respond::Facts;
use crate::store::SessionStore;

/// The service made by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S, Store> {
    inner: S,
    shared: Arc<Shared<Store>>,
}

impl<S, Store> SessionService<S, Store> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Store>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, Store> Clone for SessionService<S, Store> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, Store> fmt::Debug for SessionService<S, Store> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Store, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, Store>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
    Store: SessionStore,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, Store>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.shared.config;
        let (carrier, id) = match &config.header {
            Some(h) => (h, cookie::find_in_header(req.headers(), h)),
            None => (
                &COOKIE,
                cookie::find_id(req.headers(), config.cookie.name.as_bytes()),
            ),
        };
        // The id is a bearer credential: keep it out of header logs. (Checked
        // first: `entry` may grow the map, `contains_key` never does.)
        if req.headers().contains_key(carrier) {
            if let Entry::Occupied(mut e) = req.headers_mut().entry(carrier) {
                e.iter_mut().for_each(|v| v.set_sensitive(true));
            }
        }
        let facts = Facts {
            grpc: is_grpc(&req),
            // A cookie of ours that is not even a well-formed id can never
            // load a session: the response clears it (unless it sets a new
            // one), so the browser stops sending it. A well-formed id that
            // finds no session is left alone: it may be older than a cookie
            // a concurrent response is setting right now, and clearing it
            // could delete that one. Nor is anything cleared on a
            // cross-site request: there the browser may have withheld our
            // real (SameSite) cookie and sent only a junk one planted for a
            // parent domain, and a removal would sign the user out.
            clear_cookie: id.is_none()
                && config.header.is_none()
                && cookie::has_cookie(req.headers(), config.cookie.name.as_bytes())
                && !cross_site(&req),
            // Only looked for when someone listens.
            insecure_host: (config.header.is_none()
                && config.cookie.secure
                && tracing::enabled!(tracing::Level::DEBUG))
            .then(|| plain_http_host(&req))
            .flatten(),
        };
        ResponseFuture::start(&mut self.inner, req, self.shared.clone(), id, facts)
    }
}

/// Whether the browser says the request comes from another site
/// (`Sec-Fetch-Site: cross-site`).
fn cross_site<B>(req: &Request<B>) -> bool {
    req.headers()
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// The request's host, when nothing says it came over HTTPS and the host is
/// not a loopback name: browsers drop a `Secure` cookie received over plain
/// HTTP from such a host, so every request would start a new session. Only
/// for a debug-level hint.
fn plain_http_host<B>(req: &Request<B>) -> Option<Box<str>> {
    if req.uri().scheme_str() == Some("https") {
        return None;
    }
    let forwarded_https = req
        .headers()
        .get_all("x-forwarded-proto")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if forwarded_https {
        return None;
    }
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())?;
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Option<Box<str>> {
        let req = Request::builder().header("host", h).body(()).ok()?;
        plain_http_host(&req)
    }

    #[test]
    fn loopback_names_and_https_get_no_hint() {
        for h in [
            "localhost:3000",
            "app.localhost",
            "127.0.0.1:8080",
            "[::1]:80",
            "LOCALHOST",
        ] {
            assert_eq!(host(h), None, "{h}");
        }
        assert_eq!(host("dev.test:3000").as_deref(), Some("dev.test:3000"));
        let forwarded = Request::builder()
            .header("host", "example.com")
            .header("x-forwarded-proto", "https")
            .body(())
            .ok();
        assert_eq!(forwarded.as_ref().and_then(plain_http_host), None);
    }
}
