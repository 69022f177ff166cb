//! The response side: what the layer does to the inner service's response
//! (strip a cookie it forged, skip saving after a failure), how it tells the
//! client its id. (The response for a store failure is built in
//! [`grpc`](crate::grpc), with the one mapping from a store error to a status.)

use http::header::{HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response};

use crate::config::Config;
use crate::cookie;
use crate::error::StoreError;
use crate::grpc::{self, error_response};
use crate::persist::IdNotice;
use crate::storage::{Outcome, SessionStorage};
use crate::store::Timestamp;

/// What the layer noted about the request when it came in, for the
/// response.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// A gRPC call: failures are answered with a gRPC status.
    pub(crate) grpc: bool,
    /// It carried a cookie of ours that is not a well-formed id: clear it.
    pub(crate) clear_cookie: bool,
    /// Its host, when a `Secure` cookie sent to it would be dropped (plain
    /// HTTP, not loopback); only looked for when debug logging is on.
    pub(crate) insecure_host: Option<Box<str>>,
}

/// Logs a debug hint when the response sets our `Secure` cookie for a host
/// whose browser will drop it (every request would then start a new
/// session).
pub(crate) fn hint_if_dropped<B>(config: &Config, facts: &Facts, res: &Response<B>) {
    let Some(host) = facts.insecure_host.as_deref() else {
        return;
    };
    if cookie::response_sets(res.headers(), config.cookie.name.as_bytes()) {
        tracing::debug!(
            %host,
            "the session cookie is Secure, but this request's host is not localhost/127.0.0.1 \
             and its scheme is not known to be https: browsers drop a Secure cookie received \
             over plain http from such a host, so every request would start a new session; \
             serve over HTTPS, open the app as http://localhost:PORT, or call \
             with_secure(false) in development only"
        );
    }
}

/// Finishes the handle and cleans the response. `None` when nothing is to be
/// saved because the handler failed (a 5xx, or a gRPC failure status).
pub(crate) fn after_inner<B>(
    config: &Config,
    session: &SessionStorage,
    res: &mut Response<B>,
    grpc: bool,
) -> Option<Outcome> {
    let outcome = session.finish();
    let stripped = match &config.header {
        Some(h) => res.headers_mut().remove(h).is_some(),
        None => cookie::strip_set_cookie(res.headers_mut(), config.cookie.name.as_bytes()) > 0,
    };
    if stripped {
        tracing::warn!(
            "the inner service set the session cookie or header; the session layer owns it and dropped that value"
        );
    }
    if res.status().is_server_error() || (grpc && grpc::failed(res.headers())) {
        // Persist nothing: the handler failed part-way.
        return None;
    }
    Some(outcome)
}

/// Tells the client what became of its session, or turns a store failure
/// into the error response.
pub(crate) fn complete<B: Default>(
    config: &Config,
    session: &SessionStorage,
    mut res: Response<B>,
    result: Result<IdNotice, StoreError>,
    now: Timestamp,
    grpc: bool,
) -> Response<B> {
    match result {
        Ok(notice) => {
            match notice {
                IdNotice::Keep => {}
                IdNotice::Hold { id, .. } => session.set_final_id(Some(id)),
                IdNotice::Forget | IdNotice::Gone => session.set_final_id(None),
            }
            tell_client(config, res.headers_mut(), notice, now);
            res
        }
        // Logged where the store call failed (`telemetry::failed`).
        Err(e) => error_response(e, grpc),
    }
}

/// Expires the session cookie unless the response already sets it.
pub(crate) fn clear_cookie<B>(config: &Config, res: &mut Response<B>) {
    if cookie::response_sets(res.headers(), config.cookie.name.as_bytes()) {
        return; // a new session's cookie replaces it
    }
    if let Some(v) = config.cookie.expire() {
        res.headers_mut().append(SET_COOKIE, v);
    }
}

/// The response for a failed load (the inner service is not called). The
/// failure was logged where the store call failed (`telemetry::failed`).
pub(crate) fn load_failed<B: Default>(e: StoreError, grpc: bool) -> Response<B> {
    error_response(e, grpc)
}

/// Writes the id (or its end) into the response: `Set-Cookie`, or the
/// transport header.
fn tell_client(config: &Config, headers: &mut HeaderMap, notice: IdNotice, now: Timestamp) {
    let value = match (&config.header, &notice) {
        (_, IdNotice::Keep | IdNotice::Gone) => return,
        (
            None,
            IdNotice::Hold {
                id,
                expires_at,
                persistent,
            },
        ) => config.cookie.set(
            id,
            persistent.then(|| expires_at.saturating_duration_since(now)),
        ),
        (None, IdNotice::Forget) => config.cookie.expire(),
        (Some(_), IdNotice::Hold { id, .. }) => HeaderValue::from_str(id.encode().as_str())
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        (Some(_), IdNotice::Forget) => Some(HeaderValue::from_static("")),
    };
    let Some(value) = value else { return };
    match &config.header {
        Some(h) => {
            headers.insert(h.clone(), value);
        }
        None => {
            headers.append(SET_COOKIE, value);
        }
    }
}
