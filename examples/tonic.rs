//! Server-side sessions in a tonic gRPC server; the session id travels in
//! the metadata entry `x-session-id`.
//!
//! ```text
//! cargo run --example tonic
//! ```
//!
//! The server listens on `127.0.0.1`, on the port in `PORT` (default 50051;
//! if that port is busy, the OS picks one). A client in the same process then
//! walks through the service and prints each step; the server keeps running
//! until Ctrl-C.
//!
//! # What a tonic user writes
//!
//! ```text
//! Server::builder()
//!     .layer(SessionLayer::new(MemoryStore::new())
//!         .with_header_transport(HeaderName::from_static("x-session-id")))
//!     .add_service(my_service)
//! ```
//!
//! and, in a method, `request.extensions().get::<SessionStorage>()` (tonic
//! copies the HTTP request's extensions into the `tonic::Request`). The
//! client sends the id it was given as `x-session-id` metadata and reads the
//! response's metadata: a new id after a sign-in (`cycle_id`) or the first
//! write, an **empty** value after a sign-out (`destroy`), nothing otherwise.
//! A store failure reaches the client as a `Status`: `UNAVAILABLE` when the
//! store cannot be reached, `INTERNAL` otherwise.
//!
//! # No build script, no protoc
//!
//! The service is defined by hand, the way tonic's manual service definition
//! works: `#[derive(prost::Message)]` structs, a `tower::Service` that routes
//! `/counter.Counter/<Method>` to `tonic::server::Grpc::unary` with
//! `tonic_prost::ProstCodec`, and a client on `tonic::client::Grpc`. It is the
//! code `tonic-build` would generate from the `.proto` below, minus
//! compression options. A build script in this crate would run for every
//! user's build (and need `protoc`), which an example is not worth. Your own
//! service will normally come from `tonic-build`; the session layer does not
//! care which.
//!
//! ```text
//! syntax = "proto3";
//! package counter;
//! service Counter {
//!   rpc Increment (IncrementRequest) returns (CounterReply);  // adds `by` (at least 1)
//!   rpc SignIn (SignInRequest) returns (Empty);               // stores the user, cycles the id
//!   rpc SignOut (Empty) returns (Empty);                      // destroys the session
//! }
//! message IncrementRequest { uint64 by = 1; }
//! message CounterReply { uint64 value = 1; string user = 2; }
//! message SignInRequest { string user = 1; }
//! message Empty {}
//! ```
//!
//! With that file saved as `counter.proto`, `grpcurl -plaintext -proto
//! counter.proto -H 'x-session-id: <id>' 127.0.0.1:50051 counter.Counter/Increment`
//! talks to the server too.

use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::task::{Context, Poll};

use http::HeaderName;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, IntoRequest, Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_service::Service;
use tower_session_storage::{MemoryStore, SessionLayer, SessionStorage, SessionStore};

/// The metadata entry (an HTTP/2 header) that carries the session id.
pub(crate) const SESSION_HEADER: &str = "x-session-id";

/// Session key of the counter.
const COUNT: &str = "n";
/// Session key of the signed-in user.
const USER: &str = "user";
/// The longest user name `SignIn` accepts.
const MAX_USER_LEN: usize = 64;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error as text (`{e}`), not its `Debug` form.
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let listener = bind().await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    tokio::spawn(async move {
        if let Err(e) = serve(listener, MemoryStore::new()).await {
            eprintln!("server stopped: {e}");
        }
    });
    println!(
        "counter.Counter (gRPC) listening on {url}; session id in metadata `{SESSION_HEADER}`"
    );
    for line in walk_through(&url).await? {
        println!("  {line}");
    }
    println!("still serving on {url}; Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Binds `127.0.0.1:$PORT` (default 50051), or an OS-picked port if that fails.
pub(crate) async fn bind() -> std::io::Result<TcpListener> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(50051);
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            eprintln!("cannot listen on port {port} ({e}); letting the OS pick a port");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
    }
}

// ---------------------------------------------------------------- server

/// The session layer for gRPC: the id in the `x-session-id` header
/// (metadata) instead of a cookie.
pub(crate) fn session_layer<S: SessionStore>(store: S) -> SessionLayer<S> {
    SessionLayer::new(store).with_header_transport(HeaderName::from_static(SESSION_HEADER))
}

/// Serves `counter.Counter` on `listener`, with sessions kept in `store`.
pub(crate) async fn serve<S: SessionStore>(
    listener: TcpListener,
    store: S,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .layer(session_layer(store))
        .add_service(CounterServer)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// `counter.IncrementRequest`: add `by` (0 counts as 1).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct IncrementRequest {
    #[prost(uint64, tag = "1")]
    pub(crate) by: u64,
}

/// `counter.CounterReply`: the counter after the call, and who is signed in
/// (empty when nobody is).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct CounterReply {
    #[prost(uint64, tag = "1")]
    pub(crate) value: u64,
    #[prost(string, tag = "2")]
    pub(crate) user: String,
}

/// `counter.SignInRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SignInRequest {
    #[prost(string, tag = "1")]
    pub(crate) user: String,
}

/// `counter.Empty`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Empty {}

/// The session the layer put into the request.
fn session<T>(req: &Request<T>) -> Result<SessionStorage, Status> {
    req.extensions()
        .get::<SessionStorage>()
        .cloned()
        .ok_or_else(|| Status::internal("SessionStorage missing: is SessionLayer installed?"))
}

/// `Increment`: the counter lives in the session.
async fn increment(req: Request<IncrementRequest>) -> Result<Response<CounterReply>, Status> {
    let session = session(&req)?;
    let by = req.get_ref().by.max(1);
    let value = session
        .get_item(COUNT)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(by);
    session
        .set_item(COUNT, &value.to_string())
        .map_err(|e| Status::resource_exhausted(e.to_string()))?;
    Ok(Response::new(CounterReply {
        value,
        user: session.get_item(USER).unwrap_or_default(),
    }))
}

/// `SignIn`: stores the user and gives the session a new id (a privilege
/// change; the old id stops working). A real service checks credentials.
async fn sign_in(req: Request<SignInRequest>) -> Result<Response<Empty>, Status> {
    let session = session(&req)?;
    let user = req.get_ref().user.trim();
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(Status::invalid_argument(format!(
            "user must be 1 to {MAX_USER_LEN} bytes"
        )));
    }
    session
        .set_item(USER, user)
        .map_err(|e| Status::resource_exhausted(e.to_string()))?;
    session.cycle_id();
    Ok(Response::new(Empty {}))
}

/// `SignOut`: deletes the session; the response carries an empty id.
async fn sign_out(req: Request<Empty>) -> Result<Response<Empty>, Status> {
    session(&req)?.destroy();
    Ok(Response::new(Empty {}))
}

/// Runs one unary method: decode `Req`, call `handler`, encode its reply or
/// its `Status`. What `tonic-build` generates for each unary method.
pub(crate) fn unary<Req, Res, F, Fut>(
    req: http::Request<Body>,
    handler: F,
) -> BoxFuture<http::Response<Body>, Infallible>
where
    Req: prost::Message + Default + Send + 'static,
    Res: prost::Message + Send + 'static,
    F: FnMut(Request<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Res>, Status>> + Send + 'static,
{
    Box::pin(async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Res, Req>::default());
        Ok(grpc.unary(tower::service_fn(handler), req).await)
    })
}

/// The `counter.Counter` service: routes each method's path to its handler.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CounterServer;

impl NamedService for CounterServer {
    const NAME: &'static str = "counter.Counter";
}

impl Service<http::Request<Body>> for CounterServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            "/counter.Counter/Increment" => unary(req, increment),
            "/counter.Counter/SignIn" => unary(req, sign_in),
            "/counter.Counter/SignOut" => unary(req, sign_out),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

// ---------------------------------------------------------------- client

/// A client of `counter.Counter` (what `tonic-build` would generate).
#[derive(Debug, Clone)]
pub(crate) struct CounterClient {
    inner: tonic::client::Grpc<Channel>,
}

impl CounterClient {
    /// Connects to `url` (`http://host:port`).
    pub(crate) async fn connect(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?.connect().await?;
        Ok(Self {
            inner: tonic::client::Grpc::new(channel),
        })
    }

    /// Calls the unary method `path`.
    pub(crate) async fn call<Req, Res>(
        &mut self,
        path: &'static str,
        req: impl IntoRequest<Req>,
    ) -> Result<Response<Res>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Res: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::new(Code::Unavailable, format!("not ready: {e}")))?;
        let path = http::uri::PathAndQuery::from_static(path);
        let codec = ProstCodec::<Req, Res>::default();
        self.inner.unary(req.into_request(), path, codec).await
    }

    /// `counter.Counter/Increment`.
    pub(crate) async fn increment(
        &mut self,
        req: impl IntoRequest<IncrementRequest>,
    ) -> Result<Response<CounterReply>, Status> {
        self.call("/counter.Counter/Increment", req).await
    }

    /// `counter.Counter/SignIn`.
    pub(crate) async fn sign_in(
        &mut self,
        req: impl IntoRequest<SignInRequest>,
    ) -> Result<Response<Empty>, Status> {
        self.call("/counter.Counter/SignIn", req).await
    }

    /// `counter.Counter/SignOut`.
    pub(crate) async fn sign_out(
        &mut self,
        req: impl IntoRequest<Empty>,
    ) -> Result<Response<Empty>, Status> {
        self.call("/counter.Counter/SignOut", req).await
    }
}

/// The client side of the header transport: remembers the session id the
/// server gave, sends it with each request, and forgets it when told to.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionMetadata {
    id: Option<AsciiMetadataValue>,
}

impl SessionMetadata {
    /// `message` as a request carrying the current id, if any.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        if let Some(id) = &self.id {
            req.metadata_mut().insert(SESSION_HEADER, id.clone());
        }
        req
    }

    /// Takes what the server said about the id: a new id (first write,
    /// sign-in), an empty value (sign-out: forget it), or nothing (keep it).
    /// Use it on a response's metadata, and on a `Status`'s as well.
    pub(crate) fn update(&mut self, metadata: &MetadataMap) {
        match metadata.get(SESSION_HEADER) {
            Some(v) if v.is_empty() => self.id = None,
            Some(v) => self.id = Some(v.clone()),
            None => {}
        }
    }

    /// The current id.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The first characters of the id, for printing (ids are secrets).
    fn short(&self) -> String {
        match self.id() {
            Some(id) => format!("{}…", id.get(..8).unwrap_or(id)),
            None => "none".to_owned(),
        }
    }
}

/// The client's tour: count, sign in (new id), count, sign out (id
/// forgotten), count again from 1. Returns one line per step.
pub(crate) async fn walk_through(url: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut client = CounterClient::connect(url).await?;
    let mut session = SessionMetadata::default();
    let mut lines = Vec::new();
    for _ in 0..2 {
        let res = client
            .increment(session.request(IncrementRequest { by: 1 }))
            .await?;
        session.update(res.metadata());
        lines.push(format!(
            "Increment -> {} (session {})",
            res.get_ref().value,
            session.short()
        ));
    }
    let res = client
        .sign_in(session.request(SignInRequest {
            user: "alice".into(),
        }))
        .await?;
    session.update(res.metadata());
    lines.push(format!("SignIn alice -> new session {}", session.short()));
    let res = client
        .increment(session.request(IncrementRequest { by: 1 }))
        .await?;
    session.update(res.metadata());
    lines.push(format!(
        "Increment -> {} as {:?} (session {})",
        res.get_ref().value,
        res.get_ref().user,
        session.short()
    ));
    let res = client.sign_out(session.request(Empty {})).await?;
    session.update(res.metadata());
    lines.push(format!("SignOut -> session {}", session.short()));
    let res = client
        .increment(session.request(IncrementRequest { by: 1 }))
        .await?;
    session.update(res.metadata());
    lines.push(format!(
        "Increment -> {} (session {})",
        res.get_ref().value,
        session.short()
    ));
    Ok(lines)
}
