//! [`SessionService`]: load, call the inner service, save.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderValue, CONTENT_TYPE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use tower_service::Service;

use crate::cookie;
use crate::error::StoreError;
use crate::future::ResponseFuture;
use crate::id::{PublicId, SessionId};
use crate::layer::{Config, Shared};
use crate::storage::{Outcome, SessionStorage};
use crate::store::{now_millis, ChangeSet, CycleOutcome, Items, Record, SaveOutcome, SessionStore};

/// How many fresh ids to try when creating or cycling hits a taken id.
const ID_TRIES: usize = 4;

/// The service made by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S, Store> {
    inner: S,
    shared: Arc<Shared<Store>>,
}

impl<S, Store> SessionService<S, Store> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Store>>) -> Self {
        Self { inner, shared }
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

/// The stored session a request loaded.
#[derive(Clone, Copy)]
pub(crate) struct Loaded {
    id: SessionId,
    public_id: PublicId,
    created_at: u64,
    expires_at: u64,
}

/// What the response says about the cookie.
pub(crate) enum CookieAction {
    Nothing,
    Set { id: SessionId, expires_at: u64 },
    Expire,
}

impl<S, Store, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, Store>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
    Store: SessionStore,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared.clone();
        let config = &shared.config;
        let (carrier, id) = match &config.header {
            Some(h) => (h, cookie::find_in_header(req.headers(), h)),
            None => (
                &http::header::COOKIE,
                cookie::find_id(req.headers(), config.cookie.name.as_bytes()),
            ),
        };
        // The id is a bearer credential: keep it out of header logs.
        if req.headers().contains_key(carrier) {
            if let http::header::Entry::Occupied(mut e) = req.headers_mut().entry(carrier) {
                e.iter_mut().for_each(|v| v.set_sensitive(true));
            }
        }
        let grpc = is_grpc(&req);

        let (loaded, items, now) = match id {
            None => (None, None, None),
            Some(id) if shared.store.answers_immediately() => {
                // An in-process store: load in place, no boxed future.
                let now = now_millis();
                let loading = load_session(&*shared.store, config, id, now);
                match run_now(loading).unwrap_or_else(|| Err(not_immediate())) {
                    Ok((loaded, items)) => (loaded, items, Some(now)),
                    Err(e) => return ResponseFuture::ready(load_failed(e, grpc)),
                }
            }
            Some(id) => {
                // The inner service is called after an await: take the one
                // that was driven to readiness and leave a clone in its place,
                // https://docs.rs/tower/latest/tower/trait.Service.html#be-careful-when-cloning-inner-services
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture::boxed(async move {
                    let config = &shared.config;
                    let store = &*shared.store;
                    let now = now_millis();
                    let (loaded, items) = match load_session(store, config, id, now).await {
                        Ok(found) => found,
                        Err(e) => return Ok(load_failed(e, grpc)),
                    };
                    let session = attach(config, &mut req, loaded, items);
                    let res = match inner.call(req).await {
                        Ok(res) => res,
                        Err(e) => {
                            session.finish();
                            return Err(e);
                        }
                    };
                    Ok(match after_inner(config, &session, res, grpc) {
                        Next::Respond(res) => res,
                        Next::Persist(res, outcome) => {
                            let result = persist(store, config, loaded, outcome, now).await;
                            complete(config, &session, res, result, now, grpc)
                        }
                    })
                });
            }
        };
        let session = attach(config, &mut req, loaded, items);
        // Called right here, so the ready service itself takes the request:
        // no clone of it is needed.
        let fut = self.inner.call(req);
        ResponseFuture::direct(
            fut,
            Direct {
                session,
                saver: shared,
                grpc,
                loaded,
                now,
            },
        )
    }
}

/// Makes the request's handle and puts it into the request's extensions.
fn attach<B>(
    config: &Config,
    req: &mut Request<B>,
    loaded: Option<Loaded>,
    items: Option<Items>,
) -> SessionStorage {
    let session = SessionStorage::new(
        loaded.map(|l| l.id),
        items,
        config.max_items,
        config.max_bytes,
    );
    req.extensions_mut().insert(session.clone());
    session
}

/// The response for a failed load (the inner service is not called).
fn load_failed<B: Default>(e: StoreError, grpc: bool) -> Response<B> {
    tracing::error!(error = %e, "session store failed to load a session");
    error_response(e, grpc)
}

/// Loads the session `id`; an expired one is deleted and reported absent.
async fn load_session<Store: SessionStore>(
    store: &Store,
    config: &Config,
    id: SessionId,
    now: u64,
) -> Result<(Option<Loaded>, Option<Items>), StoreError> {
    match store.load(&id).await? {
        Some(record) if !config.is_expired(record.created_at, record.expires_at, now) => {
            let loaded = Loaded {
                id,
                public_id: record.public_id,
                created_at: record.created_at,
                expires_at: record.expires_at,
            };
            Ok((Some(loaded), Some(record.items)))
        }
        Some(_) => {
            if let Err(e) = store.delete(&id).await {
                tracing::warn!(error = %e, "could not delete an expired session");
            }
            Ok((None, None))
        }
        None => Ok((None, None)),
    }
}

/// Polls a future once, in place; `None` if it is not ready.
fn run_now<F: Future>(fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    match fut.poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

fn not_immediate() -> StoreError {
    StoreError::other(
        "the session store says it answers immediately (SessionStore::answers_immediately) \
         but returned a pending future",
    )
}

/// What is left to do once the inner service has answered.
pub(crate) enum Next<B> {
    /// Send the response as it is.
    Respond(Response<B>),
    /// Apply the outcome to the store first.
    Persist(Response<B>, Outcome),
}

/// Finishes the handle and decides whether the store must be reached.
pub(crate) fn after_inner<B>(
    config: &Config,
    session: &SessionStorage,
    mut res: Response<B>,
    grpc: bool,
) -> Next<B> {
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
    if res.status().is_server_error() || (grpc && grpc_failed(res.headers())) {
        // Persist nothing: the handler failed part-way.
        return Next::Respond(res);
    }
    Next::Persist(res, outcome)
}

/// Tells the client what became of its session, or turns a store failure
/// into the error response.
pub(crate) fn complete<B: Default>(
    config: &Config,
    session: &SessionStorage,
    mut res: Response<B>,
    result: Result<CookieAction, StoreError>,
    now: u64,
    grpc: bool,
) -> Response<B> {
    match result {
        Ok(action) => {
            match action {
                CookieAction::Nothing => {}
                CookieAction::Set { id, .. } => session.set_final_id(Some(id)),
                CookieAction::Expire => session.set_final_id(None),
            }
            tell_client(config, res.headers_mut(), action, now);
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "session store failed to save a session");
            error_response(e, grpc)
        }
    }
}

/// The store side of the layer with the store's type erased, so the
/// response future need not name it.
pub(crate) trait Saver: Send + Sync + 'static {
    fn config(&self) -> &Config;

    /// Whether the store answers immediately (persist in place).
    fn immediate(&self) -> bool;

    /// Persists in place; only for stores that answer immediately.
    fn persist_now(
        &self,
        loaded: Option<Loaded>,
        out: Outcome,
        now: u64,
    ) -> Result<CookieAction, StoreError>;

    /// Persists in a boxed future.
    fn persist_boxed(
        self: Arc<Self>,
        loaded: Option<Loaded>,
        out: Outcome,
        now: u64,
    ) -> Pin<Box<dyn Future<Output = Result<CookieAction, StoreError>> + Send>>;
}

impl<Store: SessionStore> Saver for Shared<Store> {
    fn config(&self) -> &Config {
        &self.config
    }

    fn immediate(&self) -> bool {
        self.store.answers_immediately()
    }

    fn persist_now(
        &self,
        loaded: Option<Loaded>,
        out: Outcome,
        now: u64,
    ) -> Result<CookieAction, StoreError> {
        run_now(persist(&*self.store, &self.config, loaded, out, now))
            .unwrap_or_else(|| Err(not_immediate()))
    }

    fn persist_boxed(
        self: Arc<Self>,
        loaded: Option<Loaded>,
        out: Outcome,
        now: u64,
    ) -> Pin<Box<dyn Future<Output = Result<CookieAction, StoreError>> + Send>> {
        Box::pin(async move { persist(&*self.store, &self.config, loaded, out, now).await })
    }
}

/// What a request on the in-place path needs once its inner future is done.
pub(crate) struct Direct {
    pub(crate) session: SessionStorage,
    pub(crate) saver: Arc<dyn Saver>,
    pub(crate) grpc: bool,
    pub(crate) loaded: Option<Loaded>,
    /// The time the session was loaded at, if it was.
    pub(crate) now: Option<u64>,
}

impl Direct {
    /// Whether the store must be reached at all: a loaded session may need
    /// saving or refreshing; a request without one only if it created one.
    pub(crate) fn needs_store(&self, out: &Outcome) -> bool {
        self.loaded.is_some() || out.changes.sets_any()
    }
}

/// Writes the id (or its end) into the response: `Set-Cookie`, or the
/// transport header.
fn tell_client(config: &Config, headers: &mut http::HeaderMap, action: CookieAction, now: u64) {
    let value = match (&config.header, &action) {
        (_, CookieAction::Nothing) => return,
        (None, CookieAction::Set { id, expires_at }) => {
            config.cookie.set(id, config.max_age(*expires_at, now))
        }
        (None, CookieAction::Expire) => config.cookie.expire(),
        (Some(_), CookieAction::Set { id, .. }) => HeaderValue::from_str(id.encode().as_str())
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            }),
        (Some(_), CookieAction::Expire) => Some(HeaderValue::from_static("")),
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

/// Applies what the request did to the store, in one store call for the
/// common cases. Returns what to tell the client.
async fn persist<Store: SessionStore>(
    store: &Store,
    config: &Config,
    loaded: Option<Loaded>,
    out: Outcome,
    now: u64,
) -> Result<CookieAction, StoreError> {
    if let Some(l) = loaded.filter(|_| out.destroyed.is_some()) {
        // A logout: end the session wherever it lives now, even if a
        // concurrent request has moved it to a new id meanwhile.
        store.end(&l.id, &l.public_id).await?;
        return Ok(match create(store, config, &out.changes, now).await? {
            Some(set) => set,
            None => CookieAction::Expire,
        });
    }
    let Some(l) = loaded else {
        return Ok(create(store, config, &out.changes, now)
            .await?
            .unwrap_or(CookieAction::Nothing));
    };
    let expires_at = config.expires_at(now, l.created_at);
    let refresh = config.refresh_due(l.expires_at, expires_at);
    let keep = |refreshed: bool| {
        if refreshed && config.persistent {
            CookieAction::Set {
                id: l.id,
                expires_at,
            }
        } else {
            CookieAction::Nothing
        }
    };
    if out.cycle {
        for _ in 0..ID_TRIES {
            let new = SessionId::generate();
            match store.cycle(&l.id, &new, &out.changes, expires_at).await? {
                CycleOutcome::Moved => {
                    return Ok(CookieAction::Set {
                        id: new,
                        expires_at,
                    })
                }
                CycleOutcome::Deleted => return Ok(CookieAction::Expire),
                CycleOutcome::Gone => return Ok(CookieAction::Nothing),
                CycleOutcome::Collision => {}
            }
        }
        return Err(no_free_id());
    }
    if !out.changes.is_empty() {
        return Ok(match store.save(&l.id, &out.changes, expires_at).await? {
            SaveOutcome::Saved => keep(refresh),
            SaveOutcome::Deleted => CookieAction::Expire,
            // Destroyed or expired meanwhile: the changes are dropped, and no
            // cookie is sent (the client may already hold a newer one).
            SaveOutcome::Gone => CookieAction::Nothing,
        });
    }
    if refresh {
        // Best effort: the handler's answer stands even if the refresh
        // fails; the session then expires a little sooner than it would.
        return Ok(match store.touch(&l.id, expires_at).await {
            Ok(alive) => keep(alive),
            Err(e) => {
                tracing::warn!(error = %e, "session store failed to refresh a session's expiry; answering anyway");
                CookieAction::Nothing
            }
        });
    }
    Ok(CookieAction::Nothing)
}

/// Creates a session from `changes` when they set anything.
async fn create<Store: SessionStore>(
    store: &Store,
    config: &Config,
    changes: &ChangeSet,
    now: u64,
) -> Result<Option<CookieAction>, StoreError> {
    if !changes.sets_any() {
        return Ok(None);
    }
    let mut items = Items::new();
    items.apply(changes);
    let expires_at = config.expires_at(now, now);
    let record = Record {
        items,
        created_at: now,
        expires_at,
        public_id: PublicId::generate(),
    };
    for _ in 0..ID_TRIES {
        let id = SessionId::generate();
        if store.create(&id, &record).await? {
            return Ok(Some(CookieAction::Set { id, expires_at }));
        }
    }
    Err(no_free_id())
}

fn no_free_id() -> StoreError {
    StoreError::other(format!(
        "no free session id after {ID_TRIES} tries: the store reports every new id as taken"
    ))
}

/// Whether a gRPC response is a trailers-only failure whose status maps to a
/// 5xx (gRPC's HTTP mapping: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
/// INTERNAL, UNAVAILABLE, DATA_LOSS). A status sent in trailers after a body
/// comes too late to be seen here.
fn grpc_failed(headers: &http::HeaderMap) -> bool {
    matches!(
        headers.get("grpc-status").map(HeaderValue::as_bytes),
        Some(b"2" | b"4" | b"12" | b"13" | b"14" | b"15")
    )
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The response for a store failure: 503 or 500, or for a gRPC request a
/// trailers-only gRPC status (`UNAVAILABLE` or `INTERNAL`). The error goes
/// into the response's extensions.
pub(crate) fn error_response<B: Default>(err: StoreError, grpc: bool) -> Response<B> {
    let mut res = Response::new(B::default());
    let status = err.status();
    if grpc {
        let code = if status == StatusCode::SERVICE_UNAVAILABLE {
            "14"
        } else {
            "13"
        };
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(if code == "14" {
                "session%20store%20unavailable"
            } else {
                "session%20store%20failed"
            }),
        );
    } else {
        *res.status_mut() = status;
    }
    res.extensions_mut().insert(err);
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{MemoryStore, SessionLayer};
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::{ServiceBuilder, ServiceExt};

    type Body = String;

    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}

    #[allow(dead_code)]
    fn compile_time_checks() {
        type Inner = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
        assert_send::<SessionService<Inner, MemoryStore>>();
        assert_sync::<SessionService<Inner, MemoryStore>>();
        assert_send::<ResponseFuture<<Inner as Service<Request<Body>>>::Future, Body, Infallible>>(
        );
        assert_send_sync_clone::<SessionStorage>();
        assert_send_sync_clone::<SessionLayer<MemoryStore>>();
    }

    /// A handler that runs `f` on the session and answers with `status`.
    async fn call(
        layer: &SessionLayer<MemoryStore>,
        cookie: Option<&str>,
        status: u16,
        f: impl Fn(&SessionStorage) + Send + Sync + Clone + 'static,
    ) -> Response<Body> {
        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .service(tower::service_fn(move |req: Request<Body>| {
                let f = f.clone();
                async move {
                    let s = req.extensions().get::<SessionStorage>().unwrap();
                    f(s);
                    let body = s.get_item("n").unwrap_or_default();
                    let mut res = Response::new(body);
                    *res.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(res)
                }
            }));
        let mut req = Request::new(String::new());
        if let Some(c) = cookie {
            req.headers_mut()
                .insert(http::header::COOKIE, HeaderValue::from_str(c).unwrap());
        }
        svc.oneshot(req).await.unwrap()
    }

    fn set_cookie(res: &Response<Body>) -> Option<String> {
        let all: Vec<_> = res.headers().get_all(SET_COOKIE).iter().collect();
        assert!(all.len() <= 1, "at most one Set-Cookie: {all:?}");
        all.first().map(|v| v.to_str().unwrap().to_owned())
    }

    fn cookie_pair(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn the_cookie_header_is_marked_sensitive_for_inner_layers() {
        let svc = ServiceBuilder::new()
            .layer(SessionLayer::new(MemoryStore::new()))
            .service(tower::service_fn(|req: Request<Body>| async move {
                let all: Vec<bool> = req
                    .headers()
                    .get_all(http::header::COOKIE)
                    .iter()
                    .map(HeaderValue::is_sensitive)
                    .collect();
                Ok::<_, Infallible>(Response::new(format!("{all:?}")))
            }));
        let mut req = Request::new(String::new());
        req.headers_mut()
            .append(http::header::COOKIE, HeaderValue::from_static("a=1"));
        req.headers_mut()
            .append(http::header::COOKIE, HeaderValue::from_static("id=x"));
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.body(), "[true, true]");
    }

    #[tokio::test]
    async fn untouched_request_touches_nothing() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone());
        let res = call(&layer, None, 200, |_| {}).await;
        assert_eq!(set_cookie(&res), None);
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_write_creates_the_session_and_the_cookie_brings_it_back() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone());
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let c = cookie_pair(&set_cookie(&res).unwrap());
        assert_eq!(store.len(), 1);
        let res = call(&layer, Some(&c), 200, |_| {}).await;
        assert_eq!(res.body(), "1");
        assert_eq!(set_cookie(&res), None, "no Set-Cookie when nothing changed");
    }

    #[tokio::test]
    async fn server_errors_and_inner_errors_persist_nothing() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone());
        let res = call(&layer, None, 500, |s| s.set_item("n", "1").unwrap()).await;
        assert_eq!(set_cookie(&res), None);
        assert!(store.is_empty());

        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .service(tower::service_fn(|req: Request<Body>| async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                s.set_item("n", "1").unwrap();
                Err::<Response<Body>, _>("inner failed")
            }));
        assert!(svc.oneshot(Request::new(String::new())).await.is_err());
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn handler_set_cookie_for_our_name_is_replaced_by_ours() {
        let layer = SessionLayer::new(MemoryStore::new());
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(|req: Request<Body>| async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                s.set_item("n", "1").unwrap();
                let mut res = Response::new(String::new());
                res.headers_mut()
                    .append(SET_COOKIE, HeaderValue::from_static("id=forged"));
                res.headers_mut()
                    .append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
                Ok::<_, Infallible>(res)
            }));
        let res = svc.oneshot(Request::new(String::new())).await.unwrap();
        let all: Vec<_> = res
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[0], "theme=dark");
        assert!(all[1].starts_with("id=") && !all[1].contains("forged"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_the_session_and_use_extends_it() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone()).with_idle_timeout(Duration::from_secs(60));
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let c = cookie_pair(&set_cookie(&res).unwrap());
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(40)).await;
            let res = call(&layer, Some(&c), 200, |_| {}).await;
            assert_eq!(
                res.body(),
                "1",
                "used every 40 s, a 60 s idle session lives on"
            );
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        let res = call(&layer, Some(&c), 200, |_| {}).await;
        assert_eq!(res.body(), "", "idle for 61 s: gone");
    }

    #[tokio::test(start_paused = true)]
    async fn absolute_timeout_ends_even_a_busy_session() {
        let layer = SessionLayer::new(MemoryStore::new())
            .with_idle_timeout(Duration::from_secs(60))
            .with_absolute_timeout(Duration::from_secs(100));
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let c = cookie_pair(&set_cookie(&res).unwrap());
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "1");
        tokio::time::advance(Duration::from_secs(51)).await;
        assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "");
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_cookie_is_refreshed_only_once_per_step() {
        let layer = SessionLayer::new(MemoryStore::new())
            .with_idle_timeout(Duration::from_secs(1600))
            .with_persistent_cookie(true);
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let first = set_cookie(&res).unwrap();
        assert!(first.contains("Max-Age=1600"), "{first}");
        let c = cookie_pair(&first);
        // The step is 1600/16 = 100 s: no refresh before it ...
        tokio::time::advance(Duration::from_secs(50)).await;
        assert_eq!(set_cookie(&call(&layer, Some(&c), 200, |_| {}).await), None);
        // ... and one after it, with the same id and a fresh Max-Age.
        tokio::time::advance(Duration::from_secs(60)).await;
        let refreshed = set_cookie(&call(&layer, Some(&c), 200, |_| {}).await).unwrap();
        assert_eq!(cookie_pair(&refreshed), c);
        assert!(refreshed.contains("Max-Age=1600"), "{refreshed}");
    }

    #[tokio::test]
    async fn cycle_moves_the_data_to_a_new_cookie() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone());
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let old = cookie_pair(&set_cookie(&res).unwrap());
        let res = call(&layer, Some(&old), 200, |s| s.cycle_id()).await;
        let new = cookie_pair(&set_cookie(&res).unwrap());
        assert_ne!(old, new);
        assert_eq!(call(&layer, Some(&new), 200, |_| {}).await.body(), "1");
        assert_eq!(call(&layer, Some(&old), 200, |_| {}).await.body(), "");
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn destroy_deletes_and_expires_the_cookie() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone());
        let res = call(&layer, None, 200, |s| s.set_item("n", "1").unwrap()).await;
        let c = cookie_pair(&set_cookie(&res).unwrap());
        let res = call(&layer, Some(&c), 200, |s| s.destroy()).await;
        let expired = set_cookie(&res).unwrap();
        assert!(
            expired.starts_with("id=;") && expired.contains("Max-Age=0"),
            "{expired}"
        );
        assert!(store.is_empty());
        assert_eq!(call(&layer, Some(&c), 200, |_| {}).await.body(), "");
    }

    const X_SESSION: http::HeaderName = http::HeaderName::from_static("x-session-id");

    async fn call_h(
        layer: &SessionLayer<MemoryStore>,
        id: Option<&str>,
        f: impl Fn(&SessionStorage) + Send + Sync + Clone + 'static,
    ) -> Response<Body> {
        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .service(tower::service_fn(move |req: Request<Body>| {
                let f = f.clone();
                async move {
                    let s = req.extensions().get::<SessionStorage>().unwrap();
                    f(s);
                    Ok::<_, Infallible>(Response::new(s.get_item("n").unwrap_or_default()))
                }
            }));
        let mut req = Request::new(String::new());
        if let Some(id) = id {
            req.headers_mut()
                .insert(X_SESSION, HeaderValue::from_str(id).unwrap());
        }
        svc.oneshot(req).await.unwrap()
    }

    fn header_id(res: &Response<Body>) -> Option<String> {
        assert!(res.headers().get_all(&X_SESSION).iter().count() <= 1);
        assert!(
            res.headers().get(SET_COOKIE).is_none(),
            "no cookie in header mode"
        );
        res.headers()
            .get(&X_SESSION)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn header_transport_carries_the_id_both_ways() {
        let store = MemoryStore::new();
        let layer = SessionLayer::new(store.clone()).with_header_transport(X_SESSION);
        let res = call_h(&layer, None, |s| s.set_item("n", "1").unwrap()).await;
        let id = header_id(&res).unwrap();
        assert!(id.parse::<SessionId>().is_ok(), "{id}");
        let res = call_h(&layer, Some(&format!("  {id} ")), |_| {}).await;
        assert_eq!(res.body(), "1");
        assert_eq!(
            header_id(&res),
            None,
            "no header when the id did not change"
        );

        // A made-up id is not adopted.
        let made_up = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";
        let res = call_h(&layer, Some(made_up), |s| s.set_item("n", "2").unwrap()).await;
        let other = header_id(&res).unwrap();
        assert_ne!(other, made_up);
        assert_ne!(other, id);

        // Cycle: a new id, the old one dead.
        let res = call_h(&layer, Some(&id), |s| s.cycle_id()).await;
        let cycled = header_id(&res).unwrap();
        assert_ne!(cycled, id);
        assert_eq!(call_h(&layer, Some(&id), |_| {}).await.body(), "");
        assert_eq!(call_h(&layer, Some(&cycled), |_| {}).await.body(), "1");

        // Destroy: the header comes back empty.
        let res = call_h(&layer, Some(&cycled), |s| s.destroy()).await;
        assert_eq!(header_id(&res).as_deref(), Some(""));
        assert_eq!(call_h(&layer, Some(&cycled), |_| {}).await.body(), "");
        assert_eq!(
            store.len(),
            1,
            "only the made-up request's new session is left"
        );
    }

    /// A store that claims to answer immediately but makes every call wait.
    #[derive(Clone, Default)]
    struct Liar(MemoryStore);

    impl SessionStore for Liar {
        async fn load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
            tokio::task::yield_now().await;
            self.0.load(id).await
        }
        async fn create(&self, id: &SessionId, r: &Record) -> Result<bool, StoreError> {
            tokio::task::yield_now().await;
            self.0.create(id, r).await
        }
        async fn save(
            &self,
            id: &SessionId,
            c: &ChangeSet,
            e: u64,
        ) -> Result<SaveOutcome, StoreError> {
            self.0.save(id, c, e).await
        }
        async fn cycle(
            &self,
            o: &SessionId,
            n: &SessionId,
            c: &ChangeSet,
            e: u64,
        ) -> Result<CycleOutcome, StoreError> {
            self.0.cycle(o, n, c, e).await
        }
        async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
            self.0.delete(id).await
        }
        async fn end(&self, id: &SessionId, p: &PublicId) -> Result<(), StoreError> {
            self.0.end(id, p).await
        }
        async fn touch(&self, id: &SessionId, e: u64) -> Result<bool, StoreError> {
            self.0.touch(id, e).await
        }
        fn answers_immediately(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_store_that_breaks_its_immediate_promise_gets_a_500_not_a_hang() {
        let store = Liar::default();
        let svc = ServiceBuilder::new()
            .layer(SessionLayer::new(store.clone()))
            .service(tower::service_fn(|req: Request<Body>| async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                s.set_item("n", "1").unwrap();
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        // Creating: the pending `create` turns into a 500, nothing stored.
        let res = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.extensions().get::<StoreError>().is_some());
        assert!(store.0.is_empty());
        // Loading: the pending `load` turns into a 500 before the handler.
        let mut req = Request::new(String::new());
        req.headers_mut().insert(
            http::header::COOKIE,
            HeaderValue::from_static("id=0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1"),
        );
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn grpc_requests_get_a_grpc_status_on_store_failure() {
        let res: Response<Body> = error_response(StoreError::unavailable("down"), true);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert_eq!(res.headers()[CONTENT_TYPE], "application/grpc");
        assert!(res.extensions().get::<StoreError>().is_some());
        let res: Response<Body> = error_response(StoreError::other("bad"), false);
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
