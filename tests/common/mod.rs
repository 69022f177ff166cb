//! Shared test helpers: a test server on a real socket, HTTP helpers, test
//! stores, and the store-agnostic suite.
//!
//! The suite (module [`suite`], instantiated with [`session_store_suite!`])
//! and the concurrency checks (module [`concurrency`]) are generic over
//! `S: SessionStore` and reach the store only through the trait, so every
//! backend runs the same checks: `tests/memory_store.rs` does it for
//! `MemoryStore`; a `tests/redis_store.rs` does the same for `RedisStore`.

// Each test crate uses a different part of this module.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Extension;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, StoreFuture, Timestamp,
};
use tower_session_storage::{
    PublicId, SessionError, SessionId, SessionLayer, SessionRegistry, SessionStorage, SessionStore,
    StoreError,
};

/// The default cookie name.
pub(crate) const NAME: &str = "id";

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// An axum server on `127.0.0.1:<random port>`, stopped when dropped.
pub(crate) struct TestServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(router: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { addr, task }
    }

    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// A browser-like client: a cookie jar, bound to this server.
    pub(crate) fn browser(&self) -> Browser<'_> {
        Browser {
            server: self,
            client: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
        }
    }

    /// `GET /s?<script>` with exactly the given `Cookie` header (or none).
    pub(crate) async fn raw(&self, script: &str, cookie: Option<&str>) -> Reply {
        let mut req = raw_client().get(self.url(&format!("/s?{script}")));
        if let Some(c) = cookie {
            req = req.header(reqwest::header::COOKIE, c);
        }
        send(req).await
    }

    /// `GET /s?<script>` with one `Cookie` header field per entry, raw bytes.
    pub(crate) async fn raw_fields(&self, script: &str, fields: &[&[u8]]) -> Reply {
        let mut req = raw_client().get(self.url(&format!("/s?{script}")));
        for f in fields {
            req = req.header(reqwest::header::COOKIE, HeaderValue::from_bytes(f).unwrap());
        }
        send(req).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client without a cookie jar: the test sets `Cookie` by hand.
pub(crate) fn raw_client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A client with a cookie jar, like a browser.
pub(crate) struct Browser<'a> {
    server: &'a TestServer,
    client: reqwest::Client,
}

impl Browser<'_> {
    /// `GET /s?<script>`, cookies handled by the jar.
    pub(crate) async fn run(&self, script: &str) -> Reply {
        send(self.client.get(self.server.url(&format!("/s?{script}")))).await
    }
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

pub(crate) async fn send(req: reqwest::RequestBuilder) -> Reply {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.text().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

impl Reply {
    /// Every `Set-Cookie` value.
    pub(crate) fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The one `Set-Cookie` for `name`, if any; fails when there are several.
    pub(crate) fn set_cookie_named(&self, name: &str) -> Option<String> {
        let ours: Vec<String> = self
            .set_cookies()
            .into_iter()
            .filter(|c| cookie_name(c) == name)
            .collect();
        assert!(
            ours.len() <= 1,
            "more than one Set-Cookie for {name:?}: {ours:?}"
        );
        ours.into_iter().next()
    }

    /// The one `Set-Cookie` for the default name.
    pub(crate) fn set_cookie(&self) -> Option<String> {
        self.set_cookie_named(NAME)
    }

    /// The id a `Set-Cookie` for `name` hands out (`None` when there is no
    /// such `Set-Cookie` or it expires the cookie).
    pub(crate) fn id_named(&self, name: &str) -> Option<String> {
        let c = self.set_cookie_named(name)?;
        let v = cookie_value(&c);
        (!v.is_empty()).then(|| v.to_owned())
    }

    /// The id handed out under the default name.
    pub(crate) fn new_id(&self) -> Option<String> {
        self.id_named(NAME)
    }

    /// Whether the response deletes the cookie `name`.
    pub(crate) fn expires_named(&self, name: &str) -> bool {
        self.set_cookie_named(name).is_some_and(|c| {
            cookie_value(&c).is_empty() && c.contains("Max-Age=0") && c.contains("1970")
        })
    }

    /// Whether the response deletes the cookie under the default name.
    pub(crate) fn expires_cookie(&self) -> bool {
        self.expires_named(NAME)
    }

    /// Asserts a 200 and returns the body.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body
    }
}

/// `GET /s?<script>` through `app` in-process (no socket): for tests on
/// paused tokio time and for looking at response extensions.
pub(crate) async fn call(app: &Router, script: &str, cookie: Option<&str>) -> Reply {
    use tower::ServiceExt;
    let mut req = http::Request::get(format!("/s?{script}"));
    if let Some(c) = cookie {
        req = req.header(http::header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The name of a `Set-Cookie` value.
pub(crate) fn cookie_name(set_cookie: &str) -> &str {
    set_cookie.split(['=', ';']).next().unwrap_or("").trim()
}

/// The value of a `Set-Cookie` value.
pub(crate) fn cookie_value(set_cookie: &str) -> &str {
    let pair = set_cookie.split(';').next().unwrap_or("");
    pair.split_once('=').map_or("", |(_, v)| v.trim())
}

/// The `Max-Age` of a `Set-Cookie` value.
pub(crate) fn max_age(set_cookie: &str) -> Option<u64> {
    set_cookie.split(';').find_map(|attr| {
        let (k, v) = attr.trim().split_once('=')?;
        k.eq_ignore_ascii_case("max-age")
            .then(|| v.parse().unwrap())
    })
}

/// `id=<id>` for a `Cookie` header.
pub(crate) fn cookie(id: &str) -> String {
    format!("{NAME}={id}")
}

pub(crate) fn parse_id(id: &str) -> SessionId {
    id.parse().unwrap()
}

/// A well-formed id the server never made (a UUID v4 from the test).
pub(crate) fn made_up_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------
// The scripted app
// ---------------------------------------------------------------------------

/// A layer for plain-HTTP tests: the defaults with `Secure` off, so that
/// reqwest's cookie jar sends the cookie over `http://`.
pub(crate) fn dev_layer<S: SessionStore>(store: S) -> SessionLayer<S> {
    SessionLayer::new(store).with_secure(false)
}

/// The router with the script route `/s`; add routes, then `.layer(..)`.
pub(crate) fn script_routes() -> Router {
    Router::new().route("/s", any(script))
}

/// The script app behind `layer`, served on a real socket.
pub(crate) async fn serve_script<S: SessionStore>(layer: SessionLayer<S>) -> TestServer {
    TestServer::start(script_routes().layer(layer)).await
}

/// A handler driven by its query string, so one app serves every test.
///
/// Operations run in order, separated by `&`:
/// `get=k` (outputs the value or `-`), `set=k:v` (`set=k:` sets ""),
/// `big=k:N` (sets `N` bytes of `x`), `incr=k` (outputs the new number),
/// `remove=k` (outputs the removed value or `-`), `clear`, `cycle`,
/// `destroy`, `id` (outputs the id or `-`), `status=N` (the response status).
/// Links and the registry: `link=n:v`, `unlink=n`, `pid` (the public id or
/// `-`), `idle=SECS`, `persist=0|1`, `list=n:v` (the listed public ids,
/// oldest first, joined by `+`), `endall=n:v` and `endothers=n:v` (output
/// how many were ended), `end=PID` (outputs `true`/`false`).
/// A refused write outputs `err:<kind>`. The body is the outputs joined by `,`.
async fn script(
    Extension(session): Extension<SessionStorage>,
    Extension(registry): Extension<SessionRegistry>,
    uri: Uri,
) -> (StatusCode, String) {
    let mut out = Vec::new();
    let mut status = StatusCode::OK;
    for op in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
    {
        let (cmd, arg) = op.split_once('=').unwrap_or((op, ""));
        match cmd {
            "get" => out.push(session.get_item(arg).unwrap_or_else(|| "-".into())),
            "set" => {
                let (k, v) = arg.split_once(':').unwrap_or((arg, ""));
                if let Err(e) = session.set_item(k, v) {
                    out.push(err_kind(&e).into());
                }
            }
            "big" => {
                let (k, n) = arg.split_once(':').unwrap();
                if let Err(e) = session.set_item(k, &"x".repeat(n.parse().unwrap())) {
                    out.push(err_kind(&e).into());
                }
            }
            "incr" => {
                let n: u64 = session.get_item(arg).map_or(0, |v| v.parse().unwrap()) + 1;
                match session.set_item(arg, &n.to_string()) {
                    Ok(()) => out.push(n.to_string()),
                    Err(e) => out.push(err_kind(&e).into()),
                }
            }
            "remove" => out.push(session.remove_item(arg).unwrap_or_else(|| "-".into())),
            "clear" => session.clear(),
            "cycle" => session.cycle_id(),
            "destroy" => session.destroy(),
            "id" => out.push(session.id().map_or_else(|| "-".into(), |i| i.to_string())),
            "status" => status = StatusCode::from_u16(arg.parse().unwrap()).unwrap(),
            "link" => {
                let (n, v) = arg.split_once(':').unwrap_or((arg, ""));
                if let Err(e) = session.link(n, v) {
                    out.push(err_kind(&e).into());
                }
            }
            "unlink" => session.unlink(arg),
            "pid" => out.push(
                session
                    .public_id()
                    .map_or_else(|| "-".into(), |p| p.to_string()),
            ),
            "idle" => session.set_idle_timeout(Duration::from_secs(arg.parse().unwrap())),
            "persist" => session.set_persistent_cookie(arg == "1"),
            "list" => {
                let (n, v) = arg.split_once(':').unwrap();
                let listed = registry.list(n, v).await.unwrap();
                let ids: Vec<String> = listed.iter().map(|i| i.public_id().to_string()).collect();
                out.push(ids.join("+"));
            }
            "endall" | "endothers" => {
                let (n, v) = arg.split_once(':').unwrap();
                let keep = (cmd == "endothers").then(|| session.public_id()).flatten();
                out.push(
                    registry
                        .end_all(n, v, keep.as_ref())
                        .await
                        .unwrap()
                        .to_string(),
                );
            }
            "end" => out.push(match arg.parse::<PublicId>() {
                Ok(p) => registry.end(&p).await.unwrap().to_string(),
                Err(_) => "bad".into(),
            }),
            other => panic!("unknown script op {other:?}"),
        }
    }
    (status, out.join(","))
}

pub(crate) fn err_kind(e: &SessionError) -> &'static str {
    match e {
        SessionError::TooManyItems { .. } => "err:too_many_items",
        SessionError::TooLarge { .. } => "err:too_large",
        SessionError::Finished => "err:finished",
        SessionError::InvalidLink { .. } => "err:invalid_link",
        SessionError::TooManyLinks { .. } => "err:too_many_links",
        _ => "err:other",
    }
}

/// Runs `fut`, failing the test instead of hanging when a barrier or a
/// signal never comes (a guard, not a timing assertion).
pub(crate) async fn guard<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("the test hung: a request never arrived")
}

// ---------------------------------------------------------------------------
// Test stores
// ---------------------------------------------------------------------------

/// How often each store method was called.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) load: usize,
    pub(crate) create: usize,
    pub(crate) save: usize,
    pub(crate) cycle: usize,
    pub(crate) delete: usize,
    pub(crate) touch: usize,
}

impl Counts {
    /// Every call that may write.
    pub(crate) fn writes(&self) -> usize {
        self.create + self.save + self.cycle + self.delete + self.touch
    }

    /// Every call.
    pub(crate) fn all(&self) -> usize {
        self.load + self.writes()
    }
}

#[derive(Debug, Default)]
struct AtomicCounts {
    load: AtomicUsize,
    create: AtomicUsize,
    save: AtomicUsize,
    cycle: AtomicUsize,
    delete: AtomicUsize,
    touch: AtomicUsize,
}

/// A store operation, as [`TestStore::fail_when`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Load,
    Create,
    Save,
    Cycle,
    Delete,
    End,
    Touch,
    List,
    EndLinked,
    EndPublic,
}

impl Op {
    /// Every operation but `load` may write.
    pub(crate) fn is_write(self) -> bool {
        !matches!(self, Op::Load | Op::List)
    }
}

type FailWhen = Box<dyn Fn(Op) -> Option<StoreError> + Send + Sync>;
type MapLoads = Box<dyn Fn(Record) -> Option<Record> + Send + Sync>;

/// How a [`TestStore`] misbehaves, shared by its clones.
#[derive(Default)]
struct Behaviour {
    counts: AtomicCounts,
    /// `Some`: every call answers with a pending future that yields once,
    /// then sleeps this long, then runs the call.
    delay: Option<Duration>,
    fail_when: Option<FailWhen>,
    map_loads: Option<MapLoads>,
    create_collisions: AtomicUsize,
    cycle_collisions: AtomicUsize,
    /// Every id asked for by `create`, and every new id of `cycle`.
    tried: Mutex<Vec<SessionId>>,
}

/// The one configurable store double: wraps any store, counts the calls per
/// method, and on request delays them, fails them, reports collisions or
/// doctors what loads return. Clones share the store, the settings and the
/// counts.
///
/// ```ignore
/// let store = TestStore::new(MemoryStore::new())
///     .delay(Duration::from_millis(5))
///     .fail_when(|op| (op == Op::Load).then(|| StoreError::unavailable("down")))
///     .collide_creates(2);
/// ```
///
/// Without `delay`, every answer the inner store gives at once is given at
/// once (a ready `StoreFuture`), so the layer runs the store in place. A
/// failing or colliding call is counted, and changes nothing.
pub(crate) struct TestStore<S> {
    inner: Arc<S>,
    how: Arc<Behaviour>,
}

impl<S> Clone for TestStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            how: self.how.clone(),
        }
    }
}

impl<S> TestStore<S> {
    /// Counts the calls to `inner` and otherwise passes them through.
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner: Arc::new(inner),
            how: Arc::default(),
        }
    }

    fn configure(mut self, f: impl FnOnce(&mut Behaviour)) -> Self {
        f(Arc::get_mut(&mut self.how).expect("configure a TestStore before cloning it"));
        self
    }

    /// Every call answers with a pending future (as a networked store
    /// does): it yields to the runtime once, sleeps `delay` (zero: no
    /// sleep), then runs the call.
    pub(crate) fn delay(self, delay: Duration) -> Self {
        self.configure(|b| b.delay = Some(delay))
    }

    /// Every call first asks `f`: `Some(error)` fails the call with that
    /// error before it reaches the inner store. `f` may read switches the
    /// test flips.
    pub(crate) fn fail_when(
        self,
        f: impl Fn(Op) -> Option<StoreError> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|b| b.fail_when = Some(Box::new(f)))
    }

    /// The next `n` calls to `create` report the id as taken.
    pub(crate) fn collide_creates(self, n: usize) -> Self {
        self.collide_next(Op::Create, n);
        self
    }

    /// The next `n` calls to `cycle` report the new id as taken.
    pub(crate) fn collide_cycles(self, n: usize) -> Self {
        self.collide_next(Op::Cycle, n);
        self
    }

    /// From now on, the next `n` calls to `op` (`Create` or `Cycle`) report
    /// their id as taken.
    pub(crate) fn collide_next(&self, op: Op, n: usize) {
        match op {
            Op::Create => self.how.create_collisions.store(n, Ordering::SeqCst),
            Op::Cycle => self.how.cycle_collisions.store(n, Ordering::SeqCst),
            _ => panic!("only create and cycle can collide, not {op:?}"),
        }
    }

    /// What a load finds goes through `f`: `Some(record)` is returned in
    /// its place; `None` means the stored record could not be read, so it
    /// is deleted and reported absent (the trait's contract).
    pub(crate) fn map_loads(
        self,
        f: impl Fn(Record) -> Option<Record> + Send + Sync + 'static,
    ) -> Self {
        self.configure(|b| b.map_loads = Some(Box::new(f)))
    }

    /// The wrapped store, to inspect it without counting.
    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    /// How often each method was called (`end` counts as a delete).
    pub(crate) fn counts(&self) -> Counts {
        let c = &self.how.counts;
        Counts {
            load: c.load.load(Ordering::SeqCst),
            create: c.create.load(Ordering::SeqCst),
            save: c.save.load(Ordering::SeqCst),
            cycle: c.cycle.load(Ordering::SeqCst),
            delete: c.delete.load(Ordering::SeqCst),
            touch: c.touch.load(Ordering::SeqCst),
        }
    }

    /// Every id `create` was asked for and every new id `cycle` was given,
    /// in order, since the last call.
    pub(crate) fn take_tried(&self) -> Vec<String> {
        let tried = std::mem::take(&mut *self.how.tried.lock().unwrap());
        tried.iter().map(ToString::to_string).collect()
    }
}

/// Takes one from `n` if it is not zero.
fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl<S: SessionStore> TestStore<S> {
    /// One call: counted, then (after the delay, if any) failed or passed
    /// to `call`.
    fn run<T, C>(&self, op: Op, call: C) -> StoreFuture<T>
    where
        T: Send + 'static,
        C: FnOnce(&Arc<S>, &Arc<Behaviour>) -> StoreFuture<T> + Send + 'static,
    {
        let c = &self.how.counts;
        match op {
            // The registry's calls count as the reads and deletes they are.
            Op::Load | Op::List => &c.load,
            Op::Create => &c.create,
            Op::Save => &c.save,
            Op::Cycle => &c.cycle,
            Op::Delete | Op::End | Op::EndLinked | Op::EndPublic => &c.delete,
            Op::Touch => &c.touch,
        }
        .fetch_add(1, Ordering::SeqCst);
        let fail = move |how: &Behaviour| how.fail_when.as_ref().and_then(|f| f(op));
        let Some(delay) = self.how.delay else {
            if let Some(e) = fail(&self.how) {
                return StoreFuture::ready(Err(e));
            }
            return call(&self.inner, &self.how);
        };
        let (inner, how) = (self.inner.clone(), self.how.clone());
        StoreFuture::new(async move {
            tokio::task::yield_now().await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(e) = fail(&how) {
                return Err(e);
            }
            call(&inner, &how).await
        })
    }
}

impl<S: SessionStore> SessionStore for TestStore<S> {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        let id = *id;
        self.run(Op::Load, move |s, how| {
            let found = s.load(&id, now);
            if how.map_loads.is_none() {
                return found;
            }
            let (inner, how) = (s.clone(), how.clone());
            found.then(move |r| match r {
                Ok(Some(record)) => match (how.map_loads.as_ref().unwrap())(record) {
                    Some(record) => StoreFuture::ready(Ok(Some(record))),
                    None => inner
                        .delete(&id)
                        .then(|r| StoreFuture::ready(r.map(|()| None))),
                },
                other => StoreFuture::ready(other),
            })
        })
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        let (id, record) = (*id, record.clone());
        self.run(Op::Create, move |s, how| {
            how.tried.lock().unwrap().push(id);
            if take_one(&how.create_collisions) {
                return StoreFuture::ready(Ok(false));
            }
            s.create(&id, &record)
        })
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        let (id, changes) = (*id, changes.clone());
        self.run(Op::Save, move |s, _| s.save(&id, &changes, at))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        let (old, new, changes) = (*old, *new, changes.clone());
        self.run(Op::Cycle, move |s, how| {
            how.tried.lock().unwrap().push(new);
            if take_one(&how.cycle_collisions) {
                return StoreFuture::ready(Ok(CycleOutcome::Collision));
            }
            s.cycle(&old, &new, &changes, at)
        })
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        let id = *id;
        self.run(Op::Delete, move |s, _| s.delete(&id))
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        let (id, public_id) = (*id, *public_id);
        self.run(Op::End, move |s, _| s.end(&id, &public_id))
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        let id = *id;
        self.run(Op::Touch, move |s, _| s.touch(&id, at))
    }
    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(Op::List, move |s, _| s.list(&name, &value, now, limit))
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.run(Op::EndLinked, move |s, _| s.end_linked(&name, &value, keep))
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let public_id = *public_id;
        self.run(Op::EndPublic, move |s, _| s.end_public(&public_id))
    }
}

/// A correct store that never expires anything by itself (no TTL, no
/// reclamation): whatever expires, the layer's own checks must catch.
#[derive(Clone, Default)]
pub(crate) struct NoTtlStore {
    map: Arc<Mutex<HashMap<SessionId, Record>>>,
}

impl NoTtlStore {
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl NoTtlStore {
    fn do_load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
        Ok(self.map.lock().unwrap().get(id).cloned())
    }

    fn do_create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let mut map = self.map.lock().unwrap();
        if map.contains_key(id) {
            return Ok(false);
        }
        map.insert(*id, record.clone());
        Ok(true)
    }

    fn do_save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> Result<SaveOutcome, StoreError> {
        let mut map = self.map.lock().unwrap();
        let Some(record) = map.get_mut(id) else {
            return Ok(SaveOutcome::Gone);
        };
        record.items.apply(changes);
        record.meta.apply(changes);
        record.expires_at = if changes.sets_idle_timeout() {
            expires_at
        } else {
            record.expires_at.max(expires_at)
        };
        if record.items.is_empty() {
            map.remove(id);
            return Ok(SaveOutcome::Deleted);
        }
        Ok(SaveOutcome::Saved)
    }

    fn do_cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> Result<CycleOutcome, StoreError> {
        let mut map = self.map.lock().unwrap();
        if map.contains_key(new) {
            return Ok(CycleOutcome::Collision);
        }
        let Some(mut record) = map.remove(old) else {
            return Ok(CycleOutcome::Gone);
        };
        record.items.apply(changes);
        record.meta.apply(changes);
        if record.items.is_empty() {
            return Ok(CycleOutcome::Deleted);
        }
        record.expires_at = if changes.sets_idle_timeout() {
            expires_at
        } else {
            record.expires_at.max(expires_at)
        };
        map.insert(*new, record);
        Ok(CycleOutcome::Moved)
    }

    fn do_delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.map.lock().unwrap().remove(id);
        Ok(())
    }

    fn do_end(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
        self.map
            .lock()
            .unwrap()
            .retain(|k, r| k != id && r.public_id != *public_id);
        Ok(())
    }

    fn do_touch(&self, id: &SessionId, expires_at: Timestamp) -> Result<bool, StoreError> {
        Ok(match self.map.lock().unwrap().get_mut(id) {
            Some(r) => {
                r.expires_at = r.expires_at.max(expires_at);
                true
            }
            None => false,
        })
    }
}

impl SessionStore for NoTtlStore {
    fn load(&self, id: &SessionId, _now: Timestamp) -> StoreFuture<Option<Record>> {
        StoreFuture::ready(self.do_load(id))
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_create(id, record))
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        StoreFuture::ready(self.do_save(id, changes, at.expires_at))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        StoreFuture::ready(self.do_cycle(old, new, changes, at.expires_at))
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_delete(id))
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_end(id, public_id))
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_touch(id, at.expires_at))
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let map = self.map.lock().unwrap();
        let listed = map
            .values()
            .filter(|r| r.expires_at > now && r.meta.link(name) == Some(value))
            .map(Listed::of)
            .collect();
        StoreFuture::ready(Ok(Listed::newest(listed, limit)))
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let mut map = self.map.lock().unwrap();
        let mut found = map
            .values()
            .filter(|r| r.meta.link(name) == Some(value))
            .map(|r| (r.created_at, r.public_id))
            .collect();
        let victims = keep.victims(&mut found);
        map.retain(|_, r| !victims.contains(&r.public_id));
        StoreFuture::ready(Ok(victims.len()))
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|_, r| r.public_id != *public_id || !r.meta.has_links());
        StoreFuture::ready(Ok(map.len() < before))
    }
}

/// Whether the store holds a session under `id` (through the trait only).
pub(crate) async fn exists<S: SessionStore>(store: &S, id: &str) -> bool {
    store
        .load(&parse_id(id), Timestamp::now())
        .await
        .unwrap()
        .is_some()
}

/// The item `key` of the stored session `id`, read through the trait.
pub(crate) async fn stored_item<S: SessionStore>(store: &S, id: &str, key: &str) -> Option<String> {
    let record = store.load(&parse_id(id), Timestamp::now()).await.unwrap()?;
    record.items.get(key).map(str::to_owned)
}

// ---------------------------------------------------------------------------
// The store-agnostic suite
// ---------------------------------------------------------------------------

/// Instantiates the suite: one `#[tokio::test]` per rule, each given a fresh
/// store from `$make` (an expression; it may `.await`).
///
/// `session_store_suite!(make)` lets time pass for real in the timeout
/// tests (a store whose expiry runs on real time, such as Redis);
/// `session_store_suite!(make, paused_time)` runs them on tokio's paused
/// clock (in-process stores: no sleeping).
macro_rules! session_store_suite {
    ($make:expr) => {
        session_store_suite!(@untimed $make);
        session_store_suite!(@timed $make; (flavor = "multi_thread", worker_threads = 2); Real);
    };
    ($make:expr, paused_time) => {
        session_store_suite!(@untimed $make);
        session_store_suite!(@timed $make; (start_paused = true); Paused);
    };
    (@untimed $make:expr) => {
        session_store_suite!(@tests $make;
            lazy_creation_writes_nothing_until_an_item_is_set,
            browser_counter_survives_across_requests,
            made_up_id_is_not_adopted,
            reads_see_the_requests_own_writes,
            change_sets_are_per_key,
            clear_empties_the_session_and_keeps_its_id,
            clear_alone_deletes_the_session,
            empty_value_removes_the_item_and_an_emptied_session_is_deleted,
            cycle_id_moves_the_data_to_a_new_id_and_kills_the_old_one,
            destroy_deletes_the_session_and_expires_the_cookie,
            writes_after_destroy_start_a_new_session,
            reads_do_not_write_on_every_request,
            server_error_response_persists_nothing,
            inner_service_error_persists_nothing,
            persistent_cookie_carries_max_age,
            exactly_one_set_cookie_for_our_name,
            cookie_name_is_configurable,
            registry_lists_and_ends_all_of_a_users_sessions,
            registry_ends_all_but_one_and_one_by_public_id,
            public_id_never_acts_as_the_session,
            relinking_unlinking_and_ending_keep_the_index_current,
            link_rules_are_enforced,
            a_cap_per_link_ends_the_oldest_sessions,
            per_session_lifetime_is_kept_and_carried_across_cycle,
            end_all_races_writers_and_sign_ins,
        );
    };
    (@timed $make:expr; $runtime:tt; $clock:ident) => {
        session_store_suite!(@clocked $make; $runtime; $clock;
            idle_timeout_ends_an_unused_session_and_use_extends_it,
            absolute_timeout_ends_even_a_busy_session,
            own_idle_timeout_applies_and_the_absolute_timeout_bounds_it,
        );
    };
    (@clocked $make:expr; $runtime:tt; $clock:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test $runtime]
            async fn $name() {
                crate::common::suite::$name($make, crate::common::suite::Clock::$clock).await;
            }
        )*
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crate::common::suite::$name($make).await;
            }
        )*
    };
}

/// The suite: every store-visible rule of the README's "What it guarantees".
pub(crate) mod suite {
    use super::*;

    /// Lazy creation: reading a fresh session writes nothing and sets no
    /// cookie; the first write creates it with one store call and one cookie.
    pub(crate) async fn lazy_creation_writes_nothing_until_an_item_is_set<S: SessionStore>(
        store: S,
    ) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;

        let r = srv.raw("get=a&id", None).await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(store.counts(), Counts::default(), "no store access at all");

        // Removing or clearing on a fresh session is not a write either.
        let r = srv.raw("remove=a&clear", None).await;
        assert_eq!(r.ok(), "-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(store.counts(), Counts::default());

        let r = srv.raw("set=a:1&id", None).await;
        assert_eq!(r.ok(), "-", "no id until the session exists in the store");
        let id = r.new_id().expect("a write sets the cookie");
        assert_eq!(store.counts().create, 1);
        assert_eq!(store.counts().writes(), 1);
        assert_eq!(
            stored_item(store.inner(), &id, "a").await.as_deref(),
            Some("1")
        );
    }

    /// A browser (cookie jar) keeps one session across requests; the cookie
    /// is set once, when the session is created.
    pub(crate) async fn browser_counter_survives_across_requests<S: SessionStore>(store: S) {
        let srv = serve_script(dev_layer(store)).await;
        let browser = srv.browser();
        let first = browser.run("incr=n").await;
        assert_eq!(first.ok(), "1");
        let id = first.new_id().expect("the first write sets the cookie");
        for n in 2..=5 {
            let r = browser.run("incr=n&id").await;
            assert_eq!(r.ok(), format!("{n},{id}"));
            assert_eq!(r.set_cookie(), None, "the id did not change: no Set-Cookie");
        }
    }

    /// Strict ids: a well-formed id the store does not know gives a fresh
    /// session, and a write gets a different, server-made id.
    pub(crate) async fn made_up_id_is_not_adopted<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let made_up = made_up_id();
        let r = srv.raw("get=a&id", Some(&cookie(&made_up))).await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(store.counts().writes(), 0);

        let r = srv.raw("set=a:1", Some(&cookie(&made_up))).await;
        let id = r.new_id().expect("a write creates a session");
        assert_ne!(id, made_up, "the client's id was adopted");
        assert!(!exists(store.inner(), &made_up).await);
        assert!(exists(store.inner(), &id).await);
    }

    /// Reads see the request's own writes, over the loaded snapshot.
    pub(crate) async fn reads_see_the_requests_own_writes<S: SessionStore>(store: S) {
        let srv = serve_script(dev_layer(store)).await;
        let r = srv.raw("set=a:1&get=a&set=a:2&get=a", None).await;
        assert_eq!(r.ok(), "1,2");
        let c = cookie(&r.new_id().unwrap());
        let r = srv
            .raw("get=a&set=a:3&get=a&remove=a&get=a&set=b:1", Some(&c))
            .await;
        assert_eq!(r.ok(), "2,3,3,-");
        assert_eq!(srv.raw("get=a&get=b", Some(&c)).await.ok(), "-,1");
    }

    /// A request writes only the keys it changed: a key it did not touch is
    /// never written back from its snapshot.
    pub(crate) async fn change_sets_are_per_key<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let r = srv.raw("set=a:1&set=b:1&set=c:1", None).await;
        let id = r.new_id().unwrap();
        let c = cookie(&id);

        // Change the stored session behind the layer's back, the way a
        // concurrent request would have: b is now 2.
        let mut change = ChangeSet::new();
        change.set("b", "2");
        store
            .inner()
            .save(
                &parse_id(&id),
                &change,
                Renewal::until(Timestamp::from_millis(u64::MAX / 2)),
            )
            .await
            .unwrap();

        // This request saw b=2 on load; it sets a and removes c only.
        let r = srv.raw("set=a:9&remove=c", Some(&c)).await;
        assert_eq!(r.ok(), "1");
        assert_eq!(srv.raw("get=a&get=b&get=c", Some(&c)).await.ok(), "9,2,-");
        assert_eq!(
            stored_item(store.inner(), &id, "b").await.as_deref(),
            Some("2")
        );
    }

    /// `clear()` then a write: the old items are gone, the session and its id
    /// stay.
    pub(crate) async fn clear_empties_the_session_and_keeps_its_id<S: SessionStore>(store: S) {
        let srv = serve_script(dev_layer(store)).await;
        let id = srv.raw("set=a:1&set=b:1", None).await.new_id().unwrap();
        let c = cookie(&id);
        let r = srv.raw("clear&get=a&set=z:1&id", Some(&c)).await;
        assert_eq!(r.ok(), format!("-,{id}"));
        assert_eq!(r.set_cookie(), None, "same session, same id");
        assert_eq!(srv.raw("get=a&get=b&get=z", Some(&c)).await.ok(), "-,-,1");
    }

    /// `clear()` alone leaves the session empty: it is deleted and its cookie
    /// expired.
    pub(crate) async fn clear_alone_deletes_the_session<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let id = srv.raw("set=a:1", None).await.new_id().unwrap();
        let r = srv.raw("clear", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200);
        assert!(r.expires_cookie(), "{r:?}");
        assert!(!exists(store.inner(), &id).await);
    }

    /// `set_item(k, "")` removes `k`; a session left empty is deleted and its
    /// cookie expired.
    pub(crate) async fn empty_value_removes_the_item_and_an_emptied_session_is_deleted<
        S: SessionStore,
    >(
        store: S,
    ) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let id = srv.raw("set=a:1&set=b:1", None).await.new_id().unwrap();
        let c = cookie(&id);

        let r = srv.raw("set=a:&get=a", Some(&c)).await;
        assert_eq!(r.ok(), "-");
        assert_eq!(r.set_cookie(), None, "b is left: the session lives on");
        assert_eq!(stored_item(store.inner(), &id, "a").await, None);
        assert_eq!(srv.raw("get=a&get=b", Some(&c)).await.ok(), "-,1");

        let r = srv.raw("set=b:", Some(&c)).await;
        assert_eq!(r.status, 200);
        assert!(r.expires_cookie(), "the emptied session's cookie: {r:?}");
        assert!(
            !exists(store.inner(), &id).await,
            "the emptied session is deleted"
        );

        // A fresh session with only an empty write creates nothing.
        let before = store.counts();
        let r = srv.raw("set=a:", None).await;
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(store.counts().writes(), before.writes());
    }

    /// `cycle_id()`: a new id, the data kept, the old id dead at once.
    pub(crate) async fn cycle_id_moves_the_data_to_a_new_id_and_kills_the_old_one<
        S: SessionStore,
    >(
        store: S,
    ) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let old = srv.raw("set=user:alice", None).await.new_id().unwrap();

        let r = srv.raw("set=role:admin&cycle", Some(&cookie(&old))).await;
        assert_eq!(r.status, 200);
        let new = r.new_id().expect("cycle_id sets the new id");
        assert_ne!(new, old);
        assert!(!exists(store.inner(), &old).await, "the old id is dead");

        let r = srv.raw("get=user&get=role&id", Some(&cookie(&new))).await;
        assert_eq!(r.ok(), format!("alice,admin,{new}"));

        let r = srv.raw("get=user&get=role", Some(&cookie(&old))).await;
        assert_eq!(r.ok(), "-,-", "the old id loads a fresh session");
        let r = srv.raw("set=x:1", Some(&cookie(&old))).await;
        let third = r.new_id().unwrap();
        assert!(third != old && third != new, "the old id is never reused");

        // cycle_id on a session that does not exist yet: just a new session.
        let r = srv.raw("cycle&set=a:1", None).await;
        assert!(r.new_id().is_some());
        let r = srv.raw("cycle", None).await;
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }

    /// `destroy()`: the session is gone, the cookie expired, and the old
    /// cookie no longer works.
    pub(crate) async fn destroy_deletes_the_session_and_expires_the_cookie<S: SessionStore>(
        store: S,
    ) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let browser = srv.browser();
        let id = browser.run("set=user:alice").await.new_id().unwrap();

        let r = browser.run("destroy&get=user&id").await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.expires_cookie(), "{r:?}");
        assert!(!exists(store.inner(), &id).await);
        assert_eq!(
            browser.run("get=user").await.ok(),
            "-",
            "the jar dropped it"
        );

        // A client that kept the old cookie gets a fresh session.
        let r = srv.raw("get=user", Some(&cookie(&id))).await;
        assert_eq!(r.ok(), "-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        let r = srv.raw("set=user:mallory", Some(&cookie(&id))).await;
        assert_ne!(
            r.new_id().unwrap(),
            id,
            "never resurrected under the old id"
        );
        assert!(!exists(store.inner(), &id).await);

        // Destroying a session that does not exist: nothing to delete.
        let r = srv.raw("destroy", None).await;
        assert_eq!(r.status, 200);
    }

    /// Writes after `destroy()` in the same request start a new session under
    /// a new id (documented on `destroy`).
    pub(crate) async fn writes_after_destroy_start_a_new_session<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;
        let old = srv.raw("set=user:alice", None).await.new_id().unwrap();
        let r = srv
            .raw("destroy&set=flash:bye&get=user", Some(&cookie(&old)))
            .await;
        assert_eq!(r.ok(), "-");
        let new = r.new_id().expect("the new session's cookie");
        assert_ne!(new, old);
        assert!(!exists(store.inner(), &old).await);
        assert_eq!(
            srv.raw("get=flash&get=user", Some(&cookie(&new)))
                .await
                .ok(),
            "bye,-"
        );
    }

    // ----------------------------------------------------------- links

    /// The script app behind `layer`, and the layer's registry.
    fn with_registry<S: SessionStore>(layer: SessionLayer<S>) -> (Router, SessionRegistry) {
        let registry = layer.registry();
        (script_routes().layer(layer), registry)
    }

    /// Signs a fresh client in as `user` (an item, the `user` link, a
    /// cycle) and returns its session id and public id.
    async fn sign_in(app: &Router, user: &str) -> (String, String) {
        try_sign_in(app, user)
            .await
            .expect("signed in, cycled, still there")
    }

    /// As `sign_in`; `None` when the session was ended on the way (a
    /// sign-in racing an `end_all`).
    async fn try_sign_in(app: &Router, user: &str) -> Option<(String, String)> {
        let r = call(app, &format!("set=u:{user}&link=user:{user}"), None).await;
        assert_eq!(r.ok(), "", "{r:?}");
        let id = r.new_id().expect("signed in");
        let r = call(app, "cycle", Some(&cookie(&id))).await;
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.new_id()?;
        let pid = call(app, "pid", Some(&cookie(&id))).await.ok().to_owned();
        (pid != "-").then_some((id, pid))
    }

    /// The user item the session `id` holds as a client sees it (`-`: a
    /// fresh session, signed out).
    async fn user_of(app: &Router, id: &str) -> String {
        call(app, "get=u", Some(&cookie(id))).await.ok().to_owned()
    }

    /// The registry lists a user's sessions oldest first, by public id;
    /// `end_all` ends exactly those, on their next request they are fresh,
    /// and another user's session is untouched.
    pub(crate) async fn registry_lists_and_ends_all_of_a_users_sessions<S: SessionStore>(store: S) {
        let (app, registry) = with_registry(dev_layer(store));
        let mut alice = Vec::new();
        for _ in 0..3 {
            alice.push(sign_in(&app, "alice").await);
            // Distinct creation times, so "oldest first" is checkable.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (bob, bob_pid) = sign_in(&app, "bob").await;

        let listed = registry.list("user", "alice").await.unwrap();
        let pids: Vec<String> = listed.iter().map(|i| i.public_id().to_string()).collect();
        let expected: Vec<String> = alice.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(pids, expected, "every session of alice, oldest first");
        for info in &listed {
            assert_eq!(info.links().collect::<Vec<_>>(), [("user", "alice")]);
            assert!(info.created_at() <= info.last_seen());
            assert!(info.last_seen() < info.expires_at());
        }
        assert_eq!(
            call(&app, "list=user:bob", Some(&cookie(&bob))).await.ok(),
            bob_pid,
            "in a handler, through the request's extensions"
        );

        assert_eq!(registry.end_all("user", "alice", None).await.unwrap(), 3);
        for (id, _) in &alice {
            let r = call(&app, "get=u&id", Some(&cookie(id))).await;
            assert_eq!(r.ok(), "-,-", "ended: a fresh session");
        }
        assert!(registry.list("user", "alice").await.unwrap().is_empty());
        assert_eq!(registry.end_all("user", "alice", None).await.unwrap(), 0);
        assert_eq!(
            user_of(&app, &bob).await,
            "bob",
            "another user is untouched"
        );
        // A name or value no session can hold: nothing, and no error.
        assert!(registry
            .list("no such name!", "x")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(registry.end_all("user", "", None).await.unwrap(), 0);
    }

    /// "Sign out everywhere else": `end_all` with `keep` spares the current
    /// session; `end` ends one device by its public id, even after that
    /// session moved to a new id, and says whether it found one.
    pub(crate) async fn registry_ends_all_but_one_and_one_by_public_id<S: SessionStore>(store: S) {
        let (app, registry) = with_registry(dev_layer(store));
        let (a, _) = sign_in(&app, "alice").await;
        let (b, b_pid) = sign_in(&app, "alice").await;
        let (c, _) = sign_in(&app, "alice").await;

        // B moves to a new id; its public id stays.
        let b2 = call(&app, "cycle", Some(&cookie(&b)))
            .await
            .new_id()
            .unwrap();
        assert_eq!(call(&app, "pid", Some(&cookie(&b2))).await.ok(), b_pid);
        assert_eq!(
            call(&app, &format!("end={b_pid}"), Some(&cookie(&a)))
                .await
                .ok(),
            "true"
        );
        assert_eq!(user_of(&app, &b2).await, "-", "ended wherever it moved");
        assert!(!registry.end(&b_pid.parse().unwrap()).await.unwrap());
        assert!(!registry.end(&PublicId::generate()).await.unwrap());
        // A session with no link is not the registry's to end, even once
        // it was cycled (found by the model check).
        let r = call(&app, "set=u:x&cycle&pid", None).await;
        let plain = r.new_id().unwrap();
        let r = call(&app, "cycle&pid", Some(&cookie(&plain))).await;
        let (plain, plain_pid) = (r.new_id().unwrap(), r.ok().to_owned());
        assert!(!registry.end(&plain_pid.parse().unwrap()).await.unwrap());
        assert_eq!(user_of(&app, &plain).await, "x");

        let r = call(&app, "endothers=user:alice", Some(&cookie(&a))).await;
        assert_eq!(r.ok(), "1", "C only");
        assert_eq!(user_of(&app, &c).await, "-");
        assert_eq!(user_of(&app, &a).await, "alice", "this device stays");
        assert_eq!(registry.list("user", "alice").await.unwrap().len(), 1);
    }

    /// A public id names a session and never acts as it: it is not the
    /// cookie's id, it stays across `cycle_id`, and presented as a cookie it
    /// loads nothing. `None` until the session is stored and after destroy.
    pub(crate) async fn public_id_never_acts_as_the_session<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let app = script_routes().layer(dev_layer(store.clone()));
        let r = call(&app, "set=u:alice&pid", None).await;
        assert_eq!(r.ok(), "-", "not stored yet");
        let id = r.new_id().unwrap();
        let pid = call(&app, "pid", Some(&cookie(&id))).await.ok().to_owned();
        assert_ne!(pid, id);
        assert!(!pid.contains(&id) && !id.contains(&pid));
        let r = call(&app, "cycle&pid", Some(&cookie(&id))).await;
        assert_eq!(r.ok(), pid, "stable across cycle_id");
        let id2 = r.new_id().unwrap();

        let loads = store.counts().load;
        let r = call(&app, "get=u&id", Some(&cookie(&pid))).await;
        assert_eq!(r.ok(), "-,-", "a public id is not a session id");
        assert_eq!(store.counts().load, loads, "not even looked up");
        assert_eq!(
            call(&app, "destroy&pid", Some(&cookie(&id2))).await.ok(),
            "-"
        );
    }

    /// A later link replaces the value, `unlink` removes it, and the index
    /// follows: the session is listed under its current value only. A
    /// session that ends (destroyed, emptied) leaves every list.
    pub(crate) async fn relinking_unlinking_and_ending_keep_the_index_current<S: SessionStore>(
        store: S,
    ) {
        let (app, registry) = with_registry(dev_layer(store));
        let (id, pid) = sign_in(&app, "alice").await;
        let c = cookie(&id);
        let names = |v: Vec<tower_session_storage::SessionInfo>| -> Vec<String> {
            v.iter().map(|i| i.public_id().to_string()).collect()
        };

        call(&app, "link=user:bob&link=sid:s1", Some(&c)).await.ok();
        assert!(registry.list("user", "alice").await.unwrap().is_empty());
        assert_eq!(
            names(registry.list("user", "bob").await.unwrap()),
            vec![pid.clone()]
        );
        assert_eq!(
            names(registry.list("sid", "s1").await.unwrap()),
            vec![pid.clone()]
        );
        let info = registry.list("sid", "s1").await.unwrap().remove(0);
        assert_eq!(
            info.links().collect::<Vec<_>>(),
            [("sid", "s1"), ("user", "bob")]
        );

        call(&app, "unlink=user", Some(&c)).await.ok();
        assert!(registry.list("user", "bob").await.unwrap().is_empty());
        assert_eq!(
            user_of(&app, &id).await,
            "alice",
            "unlinking keeps the session"
        );
        assert_eq!(registry.end_all("user", "bob", None).await.unwrap(), 0);
        assert_eq!(user_of(&app, &id).await, "alice");

        // Emptied: deleted, and gone from the index.
        call(&app, "remove=u", Some(&c)).await.ok();
        assert!(registry.list("sid", "s1").await.unwrap().is_empty());
        assert!(!registry.end(&pid.parse().unwrap()).await.unwrap());

        // Destroyed.
        let (id, _) = sign_in(&app, "carol").await;
        call(&app, "destroy", Some(&cookie(&id))).await.ok();
        assert!(registry.list("user", "carol").await.unwrap().is_empty());

        // Destroyed, then signed in again in the same request: only the new
        // session is listed.
        let (id, old_pid) = sign_in(&app, "dave").await;
        let r = call(
            &app,
            "destroy&set=u:dave&link=user:dave",
            Some(&cookie(&id)),
        )
        .await;
        let new_id = r.new_id().unwrap();
        let listed = names(registry.list("user", "dave").await.unwrap());
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0], old_pid);
        assert_eq!(
            call(&app, "pid", Some(&cookie(&new_id))).await.ok(),
            listed[0]
        );
    }

    /// Links are checked: a bad name or value, or one name too many, is an
    /// error and records nothing; links alone create no session.
    pub(crate) async fn link_rules_are_enforced<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let (app, registry) = with_registry(dev_layer(store.clone()));
        let r = call(&app, "link=user:alice", None).await;
        assert!(
            r.set_cookies().is_empty(),
            "links alone are no session: {r:?}"
        );
        assert_eq!(store.counts().writes(), 0);

        let r = call(
            &app,
            "set=u:x&link=bad%20name:v&link=user:&link=a:1&link=b:2&link=c:3&link=d:4&link=e:5&link=f:6&link=g:7&link=h:8&link=i:9&link=a:again",
            None,
        )
        .await;
        assert_eq!(
            r.ok(),
            "err:invalid_link,err:invalid_link,err:too_many_links",
            "the ninth name is refused; relinking a held name is not"
        );
        assert_eq!(registry.list("a", "again").await.unwrap().len(), 1);
        assert!(registry.list("i", "9").await.unwrap().is_empty());
    }

    /// `with_max_sessions_per_link`: a sign-in past the cap ends the oldest
    /// sessions, never the new one, and leaves other users alone.
    pub(crate) async fn a_cap_per_link_ends_the_oldest_sessions<S: SessionStore>(store: S) {
        let (app, registry) = with_registry(dev_layer(store).with_max_sessions_per_link("user", 2));
        let (bob, _) = sign_in(&app, "bob").await;
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(sign_in(&app, "alice").await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listed: Vec<String> = registry
            .list("user", "alice")
            .await
            .unwrap()
            .iter()
            .map(|i| i.public_id().to_string())
            .collect();
        assert_eq!(
            listed,
            [ids[2].1.clone(), ids[3].1.clone()],
            "the two newest"
        );
        assert_eq!(user_of(&app, &ids[0].0).await, "-");
        assert_eq!(user_of(&app, &ids[1].0).await, "-");
        assert_eq!(user_of(&app, &ids[3].0).await, "alice");
        assert_eq!(user_of(&app, &bob).await, "bob");
    }

    /// `end_all` racing in-flight writers (some cycling) and concurrent
    /// sign-ins, on a seeded schedule (`RACE_SEED` replays one): every
    /// session linked before `end_all` began is ended for good (no write or
    /// cycle in flight brings it back), a session signed in after it
    /// returned is untouched, and one signed in meanwhile is either ended
    /// or alive and listed, never alive and missing from the index.
    pub(crate) async fn end_all_races_writers_and_sign_ins<S: SessionStore>(store: S) {
        let seed: u64 = std::env::var("RACE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Timestamp::now().as_millis());
        eprintln!("end_all race: RACE_SEED={seed}");
        let (app, registry) = with_registry(dev_layer(store));
        let mut before = Vec::new();
        for _ in 0..4 {
            before.push(sign_in(&app, "alice").await.0);
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Writers on the signed-in sessions: each follows its cookie.
        let writers: Vec<_> = before
            .iter()
            .enumerate()
            .map(|(k, id)| {
                let (app, stop, mut id) = (app.clone(), stop.clone(), id.clone());
                let mut rng = seed ^ (k as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let script = match rng % 4 {
                            0 => "cycle&incr=n",
                            1 => "set=x:1&incr=n",
                            _ => "incr=n",
                        };
                        for _ in 0..rng % 3 {
                            tokio::task::yield_now().await;
                        }
                        let r = call(&app, script, Some(&cookie(&id))).await;
                        if let Some(new) = r.new_id() {
                            id = new;
                        }
                    }
                    id
                })
            })
            .collect();
        // Sign-ins while end_all runs.
        let signing = {
            let app = app.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..4 {
                    ids.extend(try_sign_in(&app, "alice").await);
                }
                ids
            })
        };
        for _ in 0..(seed % 8) {
            tokio::task::yield_now().await;
        }
        let ended = registry.end_all("user", "alice", None).await.unwrap();
        assert!(ended >= 4, "seed {seed}: {ended} ended");
        let after = sign_in(&app, "alice").await;
        stop.store(true, Ordering::Relaxed);
        let mut last = Vec::new();
        for w in writers {
            last.push(w.await.unwrap());
        }
        let meanwhile = signing.await.unwrap();

        for id in before.iter().chain(&last) {
            assert_eq!(
                user_of(&app, id).await,
                "-",
                "seed {seed}: a session signed in before end_all survived it"
            );
        }
        assert_eq!(user_of(&app, &after.0).await, "alice", "seed {seed}");
        let listed: Vec<String> = registry
            .list("user", "alice")
            .await
            .unwrap()
            .iter()
            .map(|i| i.public_id().to_string())
            .collect();
        assert!(listed.contains(&after.1), "seed {seed}");
        for (id, pid) in &meanwhile {
            let alive = user_of(&app, id).await == "alice";
            assert_eq!(
                alive,
                listed.contains(pid),
                "seed {seed}: a live session missing from the index, or a dead one listed"
            );
        }
    }

    /// A session's own idle timeout and cookie persistence ("remember me")
    /// are stored with it, carried across `cycle_id`, and drive its cookie.
    pub(crate) async fn per_session_lifetime_is_kept_and_carried_across_cycle<S: SessionStore>(
        store: S,
    ) {
        let (app, registry) = with_registry(dev_layer(store));
        // The layer's cookie is a browser-session cookie.
        let r = call(&app, "set=u:a", None).await;
        assert_eq!(max_age(&r.set_cookie().unwrap()), None);

        let r = call(
            &app,
            "set=u:alice&link=user:alice&idle=3600&persist=1",
            None,
        )
        .await;
        let age = max_age(&r.set_cookie().unwrap()).expect("a persistent cookie");
        assert!((3590..=3600).contains(&age), "{age}");
        let id = r.new_id().unwrap();
        let r = call(&app, "cycle", Some(&cookie(&id))).await;
        let age = max_age(&r.set_cookie().unwrap()).expect("still persistent after a cycle");
        assert!((3590..=3600).contains(&age), "{age}");
        let id = r.new_id().unwrap();
        let info = registry.list("user", "alice").await.unwrap().remove(0);
        assert_eq!(info.idle_timeout(), Some(Duration::from_secs(3600)));
        assert_eq!(info.persistent_cookie(), Some(true));

        // Turned off again: the cookie is sent again, without Max-Age.
        let r = call(&app, "persist=0", Some(&cookie(&id))).await;
        let set = r.set_cookie().expect("the cookie is sent again");
        assert_eq!(cookie_value(&set), id);
        assert_eq!(max_age(&set), None);
        // A plain read sends nothing.
        assert!(call(&app, "get=u", Some(&cookie(&id)))
            .await
            .set_cookies()
            .is_empty());
    }

    /// How time passes in the suite's timeout tests: real sleeps (for a
    /// store whose expiry runs on real time, such as Redis's TTLs), or
    /// tokio's paused clock, moved by `advance` (in-process stores; the
    /// test then takes no time).
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Clock {
        Real,
        Paused,
    }

    impl Clock {
        /// Lets `d` pass.
        pub(crate) async fn pass(self, d: Duration) {
            match self {
                Clock::Real => tokio::time::sleep(d).await,
                Clock::Paused => tokio::time::advance(d).await,
            }
        }
    }

    /// Idle timeout (sliding): an unused session ends; use extends it; the
    /// expired id is not resurrected. A 2 s idle timeout.
    pub(crate) async fn idle_timeout_ends_an_unused_session_and_use_extends_it<S: SessionStore>(
        store: S,
        clock: Clock,
    ) {
        let store = TestStore::new(store);
        let app = script_routes()
            .layer(dev_layer(store.clone()).with_idle_timeout(Duration::from_secs(2)));
        let id = call(&app, "set=a:1", None).await.new_id().unwrap();
        let c = cookie(&id);

        // Used at 1.2 s and again at 2.4 s (past the first expiry): alive.
        clock.pass(Duration::from_millis(1200)).await;
        assert_eq!(call(&app, "get=a", Some(&c)).await.ok(), "1");
        clock.pass(Duration::from_millis(1200)).await;
        assert_eq!(
            call(&app, "get=a", Some(&c)).await.ok(),
            "1",
            "use extends it"
        );

        // Unused for longer than the idle timeout: gone.
        clock.pass(Duration::from_millis(2300)).await;
        let r = call(&app, "get=a", Some(&c)).await;
        assert_eq!(r.ok(), "-", "an idle session is over");
        assert!(r.set_cookies().is_empty(), "{r:?}");
        let r = call(&app, "set=a:2", Some(&c)).await;
        assert_ne!(r.new_id().unwrap(), id, "not resurrected under the old id");
        assert!(!exists(store.inner(), &id).await);
    }

    /// A session's own idle timeout replaces the layer's (shorter here),
    /// and the layer's absolute timeout still bounds a longer one.
    pub(crate) async fn own_idle_timeout_applies_and_the_absolute_timeout_bounds_it<
        S: SessionStore,
    >(
        store: S,
        clock: Clock,
    ) {
        let app = script_routes().layer(
            dev_layer(store)
                .with_idle_timeout(Duration::from_secs(600))
                .with_absolute_timeout(Duration::from_millis(2500)),
        );
        let short = call(&app, "set=u:a&idle=1", None).await.new_id().unwrap();
        let long = call(&app, "set=u:b&idle=3600", None)
            .await
            .new_id()
            .unwrap();
        // Shortened later: the new timeout counts from that request, even
        // though the stored expiry was later.
        let shortened = call(&app, "set=u:c", None).await.new_id().unwrap();
        call(&app, "idle=1", Some(&cookie(&shortened))).await.ok();
        clock.pass(Duration::from_millis(1500)).await;
        assert_eq!(user_of(&app, &short).await, "-", "its own 1 s idle timeout");
        assert_eq!(user_of(&app, &shortened).await, "-", "shortened at once");
        assert_eq!(user_of(&app, &long).await, "b");
        clock.pass(Duration::from_millis(1200)).await;
        assert_eq!(
            user_of(&app, &long).await,
            "-",
            "the layer's absolute timeout bounds a session's own idle timeout"
        );
    }

    /// Absolute timeout: a session ends that long after creation however
    /// busy it is. A 1.5 s absolute timeout.
    pub(crate) async fn absolute_timeout_ends_even_a_busy_session<S: SessionStore>(
        store: S,
        clock: Clock,
    ) {
        let store = TestStore::new(store);
        let app = script_routes().layer(
            dev_layer(store.clone())
                .with_idle_timeout(Duration::from_secs(600))
                .with_absolute_timeout(Duration::from_millis(1500)),
        );
        let id = call(&app, "set=a:1", None).await.new_id().unwrap();
        let c = cookie(&id);
        assert_eq!(call(&app, "incr=n", Some(&c)).await.ok(), "1");
        clock.pass(Duration::from_millis(1700)).await;
        let r = call(&app, "get=a&get=n", Some(&c)).await;
        assert_eq!(r.ok(), "-,-");
        let r = call(&app, "set=a:2", Some(&c)).await;
        assert_ne!(r.new_id().unwrap(), id, "not resurrected under the old id");
        assert!(!exists(store.inner(), &id).await);
    }

    /// Refreshing the idle timeout does not cost a store write per request:
    /// with a 1-hour idle timeout (activity recorded once a minute), twenty
    /// reads write nothing.
    pub(crate) async fn reads_do_not_write_on_every_request<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let layer = dev_layer(store.clone()).with_idle_timeout(Duration::from_secs(3600));
        let srv = serve_script(layer).await;
        let c = cookie(&srv.raw("set=a:1", None).await.new_id().unwrap());
        let before = store.counts();
        for _ in 0..20 {
            let r = srv.raw("get=a", Some(&c)).await;
            assert_eq!(r.ok(), "1");
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }
        let after = store.counts();
        assert_eq!(after.load, before.load + 20);
        assert_eq!(after.writes(), before.writes(), "{before:?} -> {after:?}");
    }

    /// A 5xx response persists nothing: no new session, no change to an
    /// existing one, no cookie.
    pub(crate) async fn server_error_response_persists_nothing<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let srv = serve_script(dev_layer(store.clone())).await;

        let r = srv.raw("set=a:1&status=500", None).await;
        assert_eq!(r.status, 500);
        assert!(r.set_cookies().is_empty(), "{r:?}");
        assert_eq!(store.counts().writes(), 0);

        let id = srv.raw("set=a:1", None).await.new_id().unwrap();
        let c = cookie(&id);
        let before = store.counts();
        for script in [
            "set=a:2&status=503",
            "destroy&status=500",
            "cycle&status=502",
        ] {
            let r = srv.raw(script, Some(&c)).await;
            assert!(r.status >= 500, "{r:?}");
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }
        assert_eq!(store.counts().writes(), before.writes());
        assert_eq!(srv.raw("get=a", Some(&c)).await.ok(), "1");

        // 4xx is not a failure of the handler: its writes are kept.
        let r = srv.raw("set=a:4&status=404", Some(&c)).await;
        assert_eq!(r.status, 404);
        assert_eq!(srv.raw("get=a", Some(&c)).await.ok(), "4");
    }

    /// An inner service that fails (rather than answering 5xx) persists
    /// nothing either. In-process: an HTTP server would only drop the
    /// connection.
    pub(crate) async fn inner_service_error_persists_nothing<S: SessionStore>(store: S) {
        use tower::{ServiceBuilder, ServiceExt};

        let store = TestStore::new(store);
        let layer = dev_layer(store.clone());
        let srv = serve_script(layer.clone()).await;
        let id = srv.raw("set=a:1", None).await.new_id().unwrap();
        let before = store.counts();

        let failing = ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(|req: http::Request<String>| async move {
                let s = req.extensions().get::<SessionStorage>().unwrap();
                s.set_item("a", "2").unwrap();
                s.set_item("b", "2").unwrap();
                Err::<http::Response<String>, _>("inner failed")
            }));
        for c in [None, Some(cookie(&id))] {
            let mut req = http::Request::new(String::new());
            if let Some(c) = c {
                req.headers_mut()
                    .insert(http::header::COOKIE, c.parse().unwrap());
            }
            let err = failing.clone().oneshot(req).await.unwrap_err();
            assert_eq!(err, "inner failed", "the inner error is passed through");
        }
        assert_eq!(store.counts().writes(), before.writes());
        assert_eq!(srv.raw("get=a&get=b", Some(&cookie(&id))).await.ok(), "1,-");
    }

    /// A persistent cookie carries `Max-Age` = the idle timeout; the default
    /// browser-session cookie carries none.
    pub(crate) async fn persistent_cookie_carries_max_age<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let session = serve_script(dev_layer(store.clone())).await;
        let c = session.raw("set=a:1", None).await.set_cookie().unwrap();
        assert_eq!(max_age(&c), None, "{c}");
        assert!(!c.to_ascii_lowercase().contains("expires="), "{c}");

        let layer = dev_layer(store.clone())
            .with_persistent_cookie(true)
            .with_idle_timeout(Duration::from_secs(3600));
        let persistent = serve_script(layer).await;
        let c = persistent.raw("set=a:1", None).await.set_cookie().unwrap();
        // Whole seconds left, counted after the store call: 3600 or a hair less.
        let age = max_age(&c).unwrap_or_else(|| panic!("no Max-Age: {c}"));
        assert!((3595..=3600).contains(&age), "{c}");

        // With an absolute timeout shorter than the idle one, that caps it.
        let layer = dev_layer(store)
            .with_persistent_cookie(true)
            .with_idle_timeout(Duration::from_secs(3600))
            .with_absolute_timeout(Duration::from_secs(600));
        let capped = serve_script(layer).await;
        let c = capped.raw("set=a:1", None).await.set_cookie().unwrap();
        let age = max_age(&c).unwrap();
        assert!((595..=600).contains(&age), "{c}");
    }

    /// Exactly one `Set-Cookie` for our name, even when the handler sets one
    /// too (ours wins; the handler's other cookies are kept).
    pub(crate) async fn exactly_one_set_cookie_for_our_name<S: SessionStore>(store: S) {
        use axum::response::{AppendHeaders, IntoResponse};
        let store = TestStore::new(store);
        let app = script_routes()
            .route(
                "/forge",
                any(
                    |Extension(s): Extension<SessionStorage>, uri: Uri| async move {
                        if uri.query() == Some("write") {
                            s.set_item("a", "1").unwrap();
                        }
                        (
                            AppendHeaders([
                                ("set-cookie", "id=forged; Path=/"),
                                ("set-cookie", "theme=dark"),
                                ("set-cookie", "id=forged-again"),
                            ]),
                            "ok",
                        )
                            .into_response()
                    },
                ),
            )
            .layer(dev_layer(store.clone()));
        let srv = TestServer::start(app).await;

        let r = send(raw_client().get(srv.url("/forge?write"))).await;
        assert_eq!(r.ok(), "ok");
        let ours = r.set_cookie().expect("our cookie");
        let id = cookie_value(&ours).to_owned();
        assert!(!id.contains("forged"), "{ours}");
        assert!(exists(store.inner(), &id).await);
        assert!(r.set_cookies().iter().any(|c| c == "theme=dark"), "{r:?}");

        // No session change: none for our name at all.
        let r = send(
            raw_client()
                .get(srv.url("/forge"))
                .header("cookie", cookie(&id)),
        )
        .await;
        assert_eq!(r.ok(), "ok");
        assert_eq!(r.set_cookie(), None, "{r:?}");
        assert_eq!(r.set_cookies(), ["theme=dark"]);

        // Many writes, a cycle: still one.
        let r = srv
            .raw("set=a:1&set=b:2&set=c:3&cycle&set=d:4", Some(&cookie(&id)))
            .await;
        assert_eq!(r.set_cookies().len(), 1, "{r:?}");
    }

    /// The cookie name is configurable, and matched exactly.
    pub(crate) async fn cookie_name_is_configurable<S: SessionStore>(store: S) {
        let srv = serve_script(dev_layer(store).with_cookie_name("sid")).await;
        let r = srv.raw("set=a:1", None).await;
        assert_eq!(r.set_cookie(), None);
        let id = r.id_named("sid").expect("a cookie named sid");
        assert_eq!(srv.raw("get=a", Some(&format!("sid={id}"))).await.ok(), "1");
        assert_eq!(srv.raw("get=a", Some(&cookie(&id))).await.ok(), "-");
    }
}

// ---------------------------------------------------------------------------
// Concurrency (generic: every store must keep these)
// ---------------------------------------------------------------------------

pub(crate) mod concurrency {
    use super::*;
    use axum::routing::get;
    use tokio::sync::{oneshot, Barrier};

    /// `n` requests on one session, all holding the same loaded snapshot
    /// (a barrier makes every one load before any writes), each write its
    /// own key: every write survives. Returns the session id.
    pub(crate) async fn writes_to_different_keys_all_survive<S: SessionStore>(
        store: S,
        n: usize,
    ) -> String {
        let barrier = Arc::new(Barrier::new(n));
        let app = script_routes()
            .route(
                "/w",
                get(move |Extension(s): Extension<SessionStorage>, uri: Uri| {
                    let barrier = barrier.clone();
                    async move {
                        assert_eq!(s.get_item("base").as_deref(), Some("1"), "loaded");
                        barrier.wait().await;
                        let k = uri.query().unwrap();
                        s.set_item(k, k).unwrap();
                        "ok"
                    }
                }),
            )
            .layer(dev_layer(store));
        let srv = Arc::new(TestServer::start(app).await);
        let id = srv.raw("set=base:1", None).await.new_id().unwrap();

        let mut tasks = Vec::new();
        for i in 0..n {
            let srv = srv.clone();
            let c = cookie(&id);
            tasks.push(tokio::spawn(async move {
                send(
                    raw_client()
                        .get(srv.url(&format!("/w?k{i}")))
                        .header("cookie", c),
                )
                .await
            }));
        }
        for t in tasks {
            let r = guard(t).await.unwrap();
            assert_eq!(r.ok(), "ok");
            assert!(r.set_cookies().is_empty(), "{r:?}");
        }

        let script: Vec<String> = (0..n).map(|i| format!("get=k{i}")).collect();
        let r = srv.raw(&script.join("&"), Some(&cookie(&id))).await;
        let want: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        assert_eq!(r.ok(), want.join(","), "a concurrent write was lost");
        assert_eq!(srv.raw("get=base", Some(&cookie(&id))).await.ok(), "1");
        id
    }

    /// `n` requests write the same key at once: one value wins, the session
    /// and its other items are intact. Returns the session id.
    pub(crate) async fn writes_to_the_same_key_one_wins<S: SessionStore>(
        store: S,
        n: usize,
    ) -> String {
        let barrier = Arc::new(Barrier::new(n));
        let app = script_routes()
            .route(
                "/w",
                get(move |Extension(s): Extension<SessionStorage>, uri: Uri| {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                        s.set_item("k", uri.query().unwrap()).unwrap();
                        "ok"
                    }
                }),
            )
            .layer(dev_layer(store));
        let srv = Arc::new(TestServer::start(app).await);
        let id = srv
            .raw("set=keep:1&set=k:start", None)
            .await
            .new_id()
            .unwrap();

        let mut tasks = Vec::new();
        for i in 0..n {
            let srv = srv.clone();
            let c = cookie(&id);
            tasks.push(tokio::spawn(async move {
                send(
                    raw_client()
                        .get(srv.url(&format!("/w?v{i}")))
                        .header("cookie", c),
                )
                .await
            }));
        }
        for t in tasks {
            assert_eq!(guard(t).await.unwrap().ok(), "ok");
        }
        let r = srv.raw("get=k&get=keep&id", Some(&cookie(&id))).await;
        let body = r.ok();
        let parts: Vec<&str> = body.split(',').collect();
        let winners: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        assert!(winners.iter().any(|w| w == parts[0]), "k = {:?}", parts[0]);
        assert_eq!(&parts[1..], ["1", id.as_str()], "the session is intact");
        id
    }

    /// A request in flight on a session (it has loaded it) while another
    /// request on the same session does `script` (`destroy` or `cycle`);
    /// then the first one writes and finishes. Returns the first request's
    /// reply and the reply of the racing request.
    async fn race<S: SessionStore>(
        store: &TestStore<S>,
        old: &str,
        srv: &TestServer,
        signals: &Signals,
        script: &str,
    ) -> (Reply, Reply) {
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *signals.lock().unwrap() = Some((loaded_tx, go_rx));

        let writer = {
            let url = srv.url("/slow");
            let c = cookie(old);
            tokio::spawn(async move { send(raw_client().get(url).header("cookie", c)).await })
        };
        guard(loaded_rx).await.unwrap();
        assert!(exists(store.inner(), old).await, "not yet raced");
        let racer = srv.raw(script, Some(&cookie(old))).await;
        assert_eq!(racer.status, 200, "{racer:?}");
        go_tx.send(()).unwrap();
        let writer = guard(writer).await.unwrap();
        (writer, racer)
    }

    type Signals = Arc<Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>>;

    /// A server whose `/slow` handler loads the session, signals, waits for
    /// the go, then runs `then` on the session; it answers the `user` it
    /// loaded.
    async fn slow_app<S: SessionStore>(
        store: TestStore<S>,
        then: fn(&SessionStorage),
    ) -> (TestServer, Signals) {
        let signals: Signals = Arc::default();
        let s2 = signals.clone();
        let app = script_routes()
            .route(
                "/slow",
                get(move |Extension(s): Extension<SessionStorage>| {
                    let (loaded, go) = s2.lock().unwrap().take().unwrap();
                    async move {
                        let seen = s.get_item("user").unwrap_or_default();
                        loaded.send(()).unwrap();
                        go.await.unwrap();
                        then(&s);
                        seen
                    }
                }),
            )
            .layer(dev_layer(store));
        (TestServer::start(app).await, signals)
    }

    /// `/slow` writes `late=1` and `user=eve` after the go.
    async fn slow_writer_app<S: SessionStore>(store: TestStore<S>) -> (TestServer, Signals) {
        slow_app(store, |s| {
            s.set_item("late", "1").unwrap();
            s.set_item("user", "eve").unwrap();
        })
        .await
    }

    /// `/slow` destroys the session after the go (a logout that takes its
    /// time).
    async fn slow_logout_app<S: SessionStore>(store: TestStore<S>) -> (TestServer, Signals) {
        slow_app(store, SessionStorage::destroy).await
    }

    /// SECURITY.md #35: a logout racing a `cycle_id` on the same session. The logout
    /// loaded the session under its old id; meanwhile the other request
    /// moved it to a new id and handed that id to the browser. When the
    /// logout finishes, the session is ended under every id: the new id
    /// loads an empty session, the old one too, and the logout's response
    /// expires the cookie (it hands out no live id).
    pub(crate) async fn destroy_racing_a_cycle_ends_the_session<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let (srv, signals) = slow_logout_app(store.clone()).await;
        let old = srv.raw("set=user:alice", None).await.new_id().unwrap();

        let (logout, cycle) = race(&store, &old, &srv, &signals, "cycle").await;
        let new = cycle.new_id().expect("the cycle answered with the new id");
        assert_ne!(new, old);
        assert_eq!(logout.ok(), "alice", "the logout had loaded the session");
        assert!(
            logout.expires_cookie(),
            "the logout expires the cookie: {logout:?}"
        );
        assert!(
            !logout
                .set_cookies()
                .iter()
                .any(|c| c.contains(&new) || c.contains(&old)),
            "the logout handed out an id: {logout:?}"
        );

        let r = srv.raw("get=user", Some(&cookie(&new))).await;
        assert_eq!(
            r.ok(),
            "-",
            "the logout was undone: the session lives on under the cycled id"
        );
        assert!(!exists(store.inner(), &new).await);
        let r = srv.raw("get=user", Some(&cookie(&old))).await;
        assert_eq!(r.ok(), "-");
        assert!(!exists(store.inner(), &old).await);
    }

    /// Destroy while a writer is in flight: the writer's changes are dropped,
    /// nothing is re-created, the writer's response carries no `Set-Cookie`
    /// with the old id, and the old cookie loads a fresh session.
    pub(crate) async fn destroy_racing_a_writer_wins<S: SessionStore>(store: S) {
        let store = TestStore::new(store);
        let (srv, signals) = slow_writer_app(store.clone()).await;
        let old = srv.raw("set=user:alice", None).await.new_id().unwrap();
        let creates = store.counts().create;

        let (writer, destroy) = race(&store, &old, &srv, &signals, "destroy").await;
        assert!(destroy.expires_cookie(), "{destroy:?}");
        assert_eq!(writer.ok(), "alice", "the writer had loaded the session");
        assert!(
            !writer.set_cookies().iter().any(|c| c.contains(&old)),
            "Set-Cookie with the destroyed id: {writer:?}"
        );
        assert_eq!(writer.set_cookie(), None, "{writer:?}");
        assert!(!exists(store.inner(), &old).await, "the logout was undone");
        assert_eq!(store.counts().create, creates, "a session was re-created");

        let r = srv.raw("get=user&get=late", Some(&cookie(&old))).await;
        assert_eq!(r.ok(), "-,-");
        assert!(r.set_cookies().is_empty(), "{r:?}");
    }

    /// `cycle_id` while a writer on the old id is in flight: the writer's
    /// changes are dropped, the new id works with the data, the old is dead.
    pub(crate) async fn cycle_racing_a_writer_wins<S: SessionStore>(store: S) -> String {
        let store = TestStore::new(store);
        let (srv, signals) = slow_writer_app(store.clone()).await;
        let old = srv.raw("set=user:alice", None).await.new_id().unwrap();

        let (writer, cycle) = race(&store, &old, &srv, &signals, "cycle").await;
        let new = cycle.new_id().expect("the cycled id");
        assert_ne!(new, old);
        assert_eq!(writer.ok(), "alice");
        assert_eq!(writer.set_cookie(), None, "{writer:?}");

        let r = srv.raw("get=user&get=late", Some(&cookie(&new))).await;
        assert_eq!(r.ok(), "alice,-", "the old id's late changes were dropped");
        let r = srv.raw("get=user&get=late", Some(&cookie(&old))).await;
        assert_eq!(r.ok(), "-,-", "the old id is dead");
        assert!(!exists(store.inner(), &old).await);
        assert!(exists(store.inner(), &new).await);
        new
    }
}
