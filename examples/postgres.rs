//! Two app instances sharing sessions through one PostgreSQL database: a
//! cookie made by one works on the other, as behind a load balancer.
//!
//! ```text
//! # any PostgreSQL you can reach; e.g. Debian's, as the postgres user:
//! sudo -u postgres createuser --pwprompt app && sudo -u postgres createdb -O app app
//! DATABASE_URL=postgres://app:secret@127.0.0.1/app cargo run --example postgres --features postgres
//! ```
//!
//! The database is taken from `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). The example creates the
//! `sessions` and `sessions_links` tables if missing (`migrate()`, safe from
//! both instances at once), then starts two axum servers in one process,
//! instance A on `127.0.0.1:3001` and instance B on `127.0.0.1:3002`
//! (`PORT_A`, `PORT_B`; the OS picks a port when one is busy), each with its
//! own `PostgresStore` and connection pool, exactly as two machines would
//! have, and each running the expired-row cleanup (`deletion_task`). It
//! prints the URLs, then try (the jar file plays the browser's cookie
//! store; add `-i` to see the `Set-Cookie` headers):
//!
//! ```text
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3001/                    # A: visits: 1
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/                    # B: visits: 2, same session
//! curl -b jar.txt -c jar.txt 'http://127.0.0.1:3001/sign-in?user=alice'  # A: new id, data kept
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/me                  # B: signed in as: alice
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3002/sign-out            # B: session deleted
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3001/me                  # A: not signed in
//! ```
//!
//! And look at the sessions in the database:
//!
//! ```text
//! psql "$DATABASE_URL" -c 'SELECT id, public_id, expires_at, items FROM sessions'
//! psql "$DATABASE_URL" -c 'SELECT * FROM sessions_links'   # after sign-in: user = alice
//! ```
//!
//! Stop PostgreSQL while the servers run: requests that carry a session
//! cookie get `503 Service Unavailable` (never an empty session); start it
//! again and the next requests succeed, with no restart of the app.
//!
//! Handlers take the session with axum's `Extension<SessionStorage>`, so the
//! example needs only the crate feature `postgres`.

use std::net::Ipv4Addr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_session_storage::{PostgresStore, SessionLayer, SessionStorage};

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
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let (a, b) = (bind("PORT_A", 3001).await?, bind("PORT_B", 3002).await?);
    let (url_a, url_b) = (
        format!("http://{}", a.local_addr()?),
        format!("http://{}", b.local_addr()?),
    );
    // One pool per instance, as two machines would have; both migrate.
    let store_a = connect(&database_url).await?;
    let store_b = connect(&database_url).await?;
    tokio::try_join!(store_a.migrate(), store_b.migrate())?;
    // Each instance deletes expired rows once a minute (in batches; they
    // skip each other's rows).
    tokio::spawn(store_a.clone().deletion_task(Duration::from_secs(60)));
    tokio::spawn(store_b.clone().deletion_task(Duration::from_secs(60)));

    println!("sessions in PostgreSQL, table {}", store_a.table_name());
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

/// Connects a pool to the database, with a hint when it is not reachable.
async fn connect(url: &str) -> Result<PostgresStore, Box<dyn std::error::Error>> {
    PostgresStore::connect(url).await.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        format!(
            "{e}{cause}\nis PostgreSQL running and DATABASE_URL right? \
             (e.g. DATABASE_URL=postgres://app:secret@127.0.0.1:5432/app)"
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
/// Every instance on the same database and table shares the sessions.
pub(crate) fn app(instance: &'static str, store: PostgresStore) -> Router {
    let sessions = SessionLayer::new(store)
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
        .layer(Extension(Instance(instance)))
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

/// `GET /sign-in?user=NAME`: remembers the user, links the session to them
/// (so a `SessionRegistry` on any instance finds it), and gives it a new id
/// (the old one dies on every instance at once).
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
    if let Err(e) = session
        .set_item(USER_ID, &user)
        .and_then(|()| session.link("user", &user))
    {
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
