//! Two app instances sharing sessions through Redis: a cookie made by one
//! works on the other, as behind a load balancer.
//!
//! ```text
//! redis-server --port 6379 --save "" --appendonly no   # or any Redis you have
//! cargo run --example redis --features redis
//! ```
//!
//! Redis is taken from `REDIS_URL` (default `redis://127.0.0.1:6379`). The
//! example starts two axum servers in one process, instance A on
//! `127.0.0.1:3001` and instance B on `127.0.0.1:3002` (`PORT_A`, `PORT_B`;
//! the OS picks a port when one is busy), each with its own `RedisStore`
//! connection, exactly as two machines would have. It prints the URLs, then
//! try (the jar file plays the browser's cookie store; add `-i` to see the
//! `Set-Cookie` headers):
//!
//! ```text
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3001/                    # A: visits: 1
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/                    # B: visits: 2, same session
//! curl -b jar.txt -c jar.txt 'http://127.0.0.1:3001/sign-in?user=alice'  # A: new id, data kept
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/me                  # B: signed in as: alice
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/sign-out            # B: session deleted
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3001/me                  # A: not signed in
//! curl -i http://127.0.0.1:3001/ready                                  # 200 ready (503 while Redis is down)
//! ```
//!
//! And look at a session in Redis (the id is the `id` cookie in `jar.txt`):
//!
//! ```text
//! redis-cli --scan --pattern 'session:*'
//! redis-cli HGETALL 'session:{<id>}'     # one field per item, plus \xffc (created) and \xffu (public id)
//! redis-cli PTTL 'session:{<id>}'        # the idle timeout, counting down
//! redis-cli --scan --pattern 'session:moved:*'   # after sign-in: where each moved session lives now
//! ```
//!
//! Sessions need `maxmemory-policy noeviction` (an evicted session is a
//! silent logout); the example prints the policy it finds.
//!
//! Stop Redis while the servers run: requests that carry a session cookie
//! get `503 Service Unavailable` (never an empty session); start it again
//! and the next requests succeed, with no restart of the app. `/ready` (the
//! readiness check a load balancer polls, `RedisStore::ping`) answers `503`
//! with the reason meanwhile, and `200 ready` again once Redis is back.
//!
//! Handlers take the session with axum's `Extension<SessionStorage>`, so the
//! example needs only the crate feature `redis`.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_session_storage::{RedisStore, SessionLayer, SessionStorage, SessionStore};

/// Session key of the visit counter.
const VISITS: &str = "visits";
/// Session key of the signed-in user.
const USER_ID: &str = "user_id";

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
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let (a, b) = (bind("PORT_A", 3001).await?, bind("PORT_B", 3002).await?);
    let (url_a, url_b) = (
        format!("http://{}", a.local_addr()?),
        format!("http://{}", b.local_addr()?),
    );
    // One connection per instance, as two machines would have.
    let store_a = connect(&redis_url).await?;
    let store_b = connect(&redis_url).await?;

    println!("sessions in Redis at {redis_url}");
    match store_a.eviction_policy() {
        Some("noeviction") => {
            println!("maxmemory-policy: noeviction (good: no session is evicted)")
        }
        Some(p) => println!(
            "maxmemory-policy: {p}: Redis may evict sessions (a silent logout); \
             set `maxmemory-policy noeviction`"
        ),
        None => println!("maxmemory-policy: unknown (CONFIG refused); make sure it is noeviction"),
    }
    println!("instance A: {url_a}/");
    println!("instance B: {url_b}/");
    println!("a cookie from one works on the other; try (add -i to see Set-Cookie):");
    println!("  curl -b jar.txt -c jar.txt {url_a}/");
    println!("  curl -b jar.txt -c jar.txt {url_b}/");
    println!("  curl -b jar.txt -c jar.txt '{url_a}/sign-in?user=alice'");
    println!("  curl -b jar.txt -c jar.txt {url_b}/me");
    println!("  curl -b jar.txt -c jar.txt {url_b}/sign-out");
    println!("  curl -b jar.txt -c jar.txt {url_a}/me");

    let serve_a = axum::serve(a, app("A", store_a));
    let serve_b = axum::serve(b, app("B", store_b));
    tokio::try_join!(async { serve_a.await }, async { serve_b.await })?;
    Ok(())
}

/// Connects to Redis, with a hint when it is not running.
async fn connect(url: &str) -> Result<RedisStore, Box<dyn std::error::Error>> {
    RedisStore::connect(url).await.map_err(|e| {
        format!(
            "{e}\nis Redis running? start one with `redis-server`, or set REDIS_URL \
             (e.g. REDIS_URL=redis://127.0.0.1:6380)"
        )
        .into()
    })
}

/// Binds `127.0.0.1:$var` (default `port`), or an OS-picked port if that
/// fails.
async fn bind(var: &str, port: u16) -> std::io::Result<TcpListener> {
    let port = std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(port);
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => Ok(listener),
        Err(e) => {
            eprintln!("cannot listen on port {port} ({e}); letting the OS pick a port");
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
        }
    }
}

/// One app instance: its routes behind a [`SessionLayer`] over `store`.
/// Every instance with the same Redis and key prefix shares the sessions.
pub(crate) fn app(instance: &'static str, store: RedisStore) -> Router {
    let sessions = SessionLayer::new(store.clone())
        // Plain-HTTP demo, opened by any host name (two instances, maybe on
        // two machines): browsers and curl send a `Secure` cookie over
        // http:// only to localhost and 127.0.0.1. Keep the default (`true`)
        // in production, behind HTTPS.
        .with_secure(false)
        .with_idle_timeout(Duration::from_secs(30 * 60));
    Router::new()
        .route("/", get(counter))
        .route("/sign-in", get(sign_in))
        .route("/sign-out", get(sign_out))
        .route("/me", get(me))
        .layer(sessions)
        // Outside the session layer: a health check touches no session.
        .route("/ready", get(ready))
        .layer(Extension(Instance(instance)))
        .layer(Extension(store))
}

/// `GET /ready`: the load balancer's readiness check. `200 ready` when
/// Redis answers a `PING` (every primary, on a Cluster) within the store's
/// command timeout; `503` with the reason otherwise, so the instance is
/// taken out of rotation while its Redis is unreachable and put back when
/// it answers again.
async fn ready(Extension(store): Extension<RedisStore>) -> Response {
    match store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            )
                .into_response()
        }
    }
}

/// Which instance answered.
#[derive(Clone, Copy)]
struct Instance(&'static str);

/// `GET /`: counts this session's visits, over both instances.
async fn counter(
    Extension(Instance(name)): Extension<Instance>,
    Extension(session): Extension<SessionStorage>,
) -> Response {
    let visits = session
        .get_item(VISITS)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    if let Err(e) = session.set_item(VISITS, &visits.to_string()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    format!("instance {name}: visits: {visits}\n{}\n", who(&session)).into_response()
}

/// The query of `/sign-in`.
#[derive(Deserialize)]
struct SignIn {
    user: Option<String>,
}

/// `GET /sign-in?user=NAME`: remembers the user and gives the session a new
/// id (the old one dies on every instance at once).
async fn sign_in(
    Extension(Instance(name)): Extension<Instance>,
    Extension(session): Extension<SessionStorage>,
    Query(query): Query<SignIn>,
) -> Response {
    let Some(user) = query.user.filter(|u| is_user_name(u)) else {
        return (
            StatusCode::BAD_REQUEST,
            "user must be 1 to 32 letters, digits, '-', '_' or '.': /sign-in?user=alice\n",
        )
            .into_response();
    };
    if let Err(e) = session.set_item(USER_ID, &user) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    session.cycle_id();
    format!("instance {name}: signed in as: {user}\n(the session got a new id)\n").into_response()
}

/// `GET /sign-out`: deletes the session and expires its cookie.
async fn sign_out(
    Extension(Instance(name)): Extension<Instance>,
    Extension(session): Extension<SessionStorage>,
) -> String {
    session.destroy();
    format!("instance {name}: signed out: session deleted, cookie expired\n")
}

/// `GET /me`: who is signed in. Reads only, so it never sets a cookie.
async fn me(
    Extension(Instance(name)): Extension<Instance>,
    Extension(session): Extension<SessionStorage>,
) -> String {
    format!("instance {name}: {}\n", who(&session))
}

fn who(session: &SessionStorage) -> String {
    match session.get_item(USER_ID) {
        Some(user) => format!("signed in as: {user}"),
        None => "not signed in".to_owned(),
    }
}

/// Accepts short names of safe characters, so they can be echoed as they are.
fn is_user_name(user: &str) -> bool {
    (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}
