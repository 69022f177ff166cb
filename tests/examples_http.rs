//! Drives `examples/axum.rs` and `examples/hyper.rs` (the same demo, with and
//! without a framework) over a real socket with a real HTTP client and
//! cookie jar: the counter, sign-in (`cycle_id`), sign-out (`destroy`), and
//! ids the server never made. Every test runs against both examples.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod axum_example;
#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::COOKIE;
use reqwest::{Client, StatusCode, Url};
use tokio::net::TcpListener;

/// A well-formed UUID v4 the server never issued.
const MADE_UP: &str = "0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1";

/// Which example to start.
#[derive(Clone, Copy)]
enum Demo {
    Axum,
    Hyper,
}

/// The example on `127.0.0.1:0`; returns its base URL.
async fn start(demo: Demo) -> Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match demo {
        Demo::Axum => drop(tokio::spawn(axum_example::serve(listener))),
        Demo::Hyper => drop(tokio::spawn(hyper_example::serve(listener))),
    }
    Url::parse(&format!("http://{addr}/")).unwrap()
}

/// A client with its own cookie jar, like one browser.
fn browser() -> (Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = Client::builder()
        .cookie_provider(jar.clone())
        .no_proxy()
        .build()
        .unwrap();
    (client, jar)
}

/// A client without cookie jar: cookies are sent by hand.
fn bare() -> Client {
    Client::builder().no_proxy().build().unwrap()
}

/// One response, reduced to what the tests look at.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// The `id` cookie the response sets: (value, max_age in seconds).
    set_id: Option<(String, Option<u64>)>,
    /// The body's text, one line per non-empty line, HTML tags removed (the
    /// axum demo answers HTML pages, the hyper one plain text).
    lines: Vec<String>,
    /// The body as sent.
    raw: String,
    content_type: String,
}

impl Answer {
    /// Whether the page shows `lines`, one after the other.
    fn shows(&self, lines: &[&str]) -> bool {
        self.lines.windows(lines.len()).any(|w| w == lines)
    }
}

/// The text of a body: each line with its HTML tags removed and trimmed;
/// empty lines dropped.
fn text_lines(body: &str) -> Vec<String> {
    body.lines()
        .map(|line| {
            let mut out = String::new();
            let mut in_tag = false;
            for c in line.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => in_tag = false,
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            out.trim().to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

async fn answer(req: reqwest::RequestBuilder) -> Answer {
    let res = req.send().await.unwrap();
    let ours: Vec<_> = res
        .cookies()
        .filter(|c| c.name() == "id")
        .map(|c| {
            assert!(c.http_only(), "HttpOnly by default");
            assert!(c.same_site_lax(), "SameSite=Lax by default");
            assert_eq!(c.path(), Some("/"));
            assert!(c.secure(), "Secure by default, also on plain-HTTP loopback");
            (c.value().to_owned(), c.max_age().map(|d| d.as_secs()))
        })
        .collect();
    assert!(ours.len() <= 1, "at most one Set-Cookie for id: {ours:?}");
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = res.status();
    let raw = res.text().await.unwrap();
    Answer {
        status,
        set_id: ours.into_iter().next(),
        content_type,
        lines: text_lines(&raw),
        raw,
    }
}

async fn get(client: &Client, base: &Url, path: &str) -> Answer {
    answer(client.get(base.join(path).unwrap())).await
}

/// A request carrying `id=<id>` by hand.
async fn get_with_id(base: &Url, path: &str, id: &str) -> Answer {
    answer(
        bare()
            .get(base.join(path).unwrap())
            .header(COOKIE, format!("id={id}")),
    )
    .await
}

/// The id a response set as a live (browser-session) cookie.
fn new_id(a: &Answer) -> String {
    match &a.set_id {
        Some((id, None)) if id.len() == 36 => id.clone(),
        other => panic!("expected a new session cookie, got {other:?} ({a:?})"),
    }
}

/// The `id` the jar would send, if any.
fn jar_id(jar: &Jar, base: &Url) -> Option<String> {
    let header = jar.cookies(base)?;
    header
        .to_str()
        .unwrap()
        .split("; ")
        .find_map(|p| p.strip_prefix("id="))
        .map(str::to_owned)
}

async fn counter_advances_across_requests(base: Url) {
    let (client, jar) = browser();

    let first = get(&client, &base, "/").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.shows(&["visits: 1", "not signed in"]), "{first:?}");
    let id = new_id(&first);
    assert_eq!(jar_id(&jar, &base).as_deref(), Some(id.as_str()));

    for n in 2..=4 {
        let a = get(&client, &base, "/").await;
        assert!(a.shows(&[&format!("visits: {n}")]), "{a:?}");
        assert_eq!(a.set_id, None, "a known session needs no new cookie");
    }

    // Another browser has its own session.
    let (other, _) = browser();
    let a = get(&other, &base, "/").await;
    assert!(a.shows(&["visits: 1"]), "{a:?}");
    assert_ne!(new_id(&a), id);
}

async fn reading_without_a_session_sets_no_cookie(base: Url) {
    let (client, jar) = browser();
    let a = get(&client, &base, "/me").await;
    assert!(a.shows(&["not signed in"]));
    assert_eq!(a.set_id, None);
    assert_eq!(jar_id(&jar, &base), None);
}

async fn sign_in_moves_the_session_to_a_new_id_and_the_old_id_dies(base: Url) {
    let (client, jar) = browser();
    let before = new_id(&get(&client, &base, "/").await);

    let a = get(&client, &base, "/sign-in?user=alice").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.shows(&["signed in as: alice"]), "{a:?}");
    let after = new_id(&a);
    assert_ne!(after, before, "sign-in must cycle the id");
    assert_eq!(jar_id(&jar, &base).as_deref(), Some(after.as_str()));

    // The data moved with the session.
    assert!(get(&client, &base, "/me")
        .await
        .shows(&["signed in as: alice"]));
    let a = get(&client, &base, "/").await;
    assert!(a.shows(&["visits: 2", "signed in as: alice"]), "{a:?}");
    assert_eq!(a.set_id, None);

    // The old id, replayed by hand, is dead: an empty session, and a write
    // gets a brand-new id, never the old one.
    assert!(get_with_id(&base, "/me", &before)
        .await
        .shows(&["not signed in"]));
    let replay = get_with_id(&base, "/", &before).await;
    assert!(replay.shows(&["visits: 1", "not signed in"]), "{replay:?}");
    let fresh = new_id(&replay);
    assert!(fresh != before && fresh != after);

    // The browser's session is untouched by the replay.
    assert!(get(&client, &base, "/me")
        .await
        .shows(&["signed in as: alice"]));
}

async fn sign_out_expires_the_cookie_and_the_old_id_dies(base: Url) {
    let (client, jar) = browser();
    let id = new_id(&get(&client, &base, "/sign-in?user=bob").await);
    assert!(get(&client, &base, "/me")
        .await
        .shows(&["signed in as: bob"]));

    let a = get(&client, &base, "/sign-out").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.set_id,
        Some((String::new(), Some(0))),
        "sign-out expires the cookie: {a:?}"
    );
    assert_eq!(jar_id(&jar, &base), None, "the jar dropped the cookie");

    let a = get(&client, &base, "/me").await;
    assert!(a.shows(&["not signed in"]));
    assert_eq!(a.set_id, None);

    // Replaying the old id by hand finds nothing, and a write gets a new id.
    assert!(get_with_id(&base, "/me", &id)
        .await
        .shows(&["not signed in"]));
    let replay = get_with_id(&base, "/", &id).await;
    assert!(replay.shows(&["visits: 1", "not signed in"]), "{replay:?}");
    assert_ne!(new_id(&replay), id);
}

async fn a_made_up_id_is_never_adopted(base: Url) {
    assert!(get_with_id(&base, "/me", MADE_UP)
        .await
        .shows(&["not signed in"]));
    let a = get_with_id(&base, "/", MADE_UP).await;
    assert!(a.shows(&["visits: 1"]), "{a:?}");
    let issued = new_id(&a);
    assert_ne!(issued, MADE_UP);
    // Still unknown afterwards; the issued id is the one that works.
    assert!(get_with_id(&base, "/", MADE_UP).await.shows(&["visits: 1"]));
    assert!(get_with_id(&base, "/", &issued).await.shows(&["visits: 2"]));

    // Signing in with a planted id (session fixation) also gets a fresh id.
    let a = get_with_id(&base, "/sign-in?user=mallory", MADE_UP).await;
    let issued = new_id(&a);
    assert_ne!(issued, MADE_UP);
    assert!(get_with_id(&base, "/me", MADE_UP)
        .await
        .shows(&["not signed in"]));
}

async fn bad_user_names_are_refused_and_store_nothing(base: Url) {
    let (client, jar) = browser();
    for path in [
        "/sign-in",
        "/sign-in?user=",
        "/sign-in?user=%3Cscript%3E",
        "/sign-in?user=a%20b",
        "/sign-in?name=alice",
        "/sign-in?user=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let a = get(&client, &base, path).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {a:?}");
        assert_eq!(a.set_id, None, "{path}");
    }
    assert_eq!(jar_id(&jar, &base), None);
}

async fn unknown_routes_and_methods_are_refused(base: Url) {
    let (client, jar) = browser();
    let a = get(&client, &base, "/nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = answer(client.post(base.join("/").unwrap())).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.set_id, None);
    assert_eq!(jar_id(&jar, &base), None);
}

/// Each scenario above as a test against each example.
macro_rules! against_both_demos {
    ($($name:ident),* $(,)?) => {
        mod axum_demo {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::start(super::Demo::Axum).await).await;
            })*
        }
        mod hyper_demo {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::start(super::Demo::Hyper).await).await;
            })*
        }
    };
}

against_both_demos!(
    counter_advances_across_requests,
    reading_without_a_session_sets_no_cookie,
    sign_in_moves_the_session_to_a_new_id_and_the_old_id_dies,
    sign_out_expires_the_cookie_and_the_old_id_dies,
    a_made_up_id_is_never_adopted,
    bad_user_names_are_refused_and_store_nothing,
    unknown_routes_and_methods_are_refused,
);

/// The axum demo is meant to be clicked through: every page, errors
/// included, is HTML with a link or a button for each step.
mod axum_pages {
    use super::*;

    #[tokio::test]
    async fn every_page_is_html_with_the_way_on() {
        let base = start(Demo::Axum).await;
        let (client, _jar) = browser();
        for (path, status) in [
            ("/", StatusCode::OK),
            ("/me", StatusCode::OK),
            ("/sign-in?user=alice", StatusCode::OK),
            ("/sign-in?user=", StatusCode::BAD_REQUEST),
            ("/sign-out", StatusCode::OK),
            ("/nope", StatusCode::NOT_FOUND),
        ] {
            let a = get(&client, &base, path).await;
            assert_eq!(a.status, status, "{path}: {a:?}");
            assert!(a.content_type.starts_with("text/html"), "{path}: {a:?}");
            for way_on in [
                "href=\"/\"",
                "action=\"/sign-in\"",
                "name=\"user\"",
                "href=\"/me\"",
                "action=\"/sign-out\"",
            ] {
                assert!(a.raw.contains(way_on), "{path} lacks {way_on}: {a:?}");
            }
        }
    }

    #[tokio::test]
    async fn sign_out_without_a_session_claims_no_deletion() {
        let base = start(Demo::Axum).await;
        let (client, jar) = browser();
        let a = get(&client, &base, "/sign-out").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            a.shows(&["no session to sign out of: nothing was deleted"]),
            "{a:?}"
        );
        assert_eq!(a.set_id, None, "no cookie to expire");
        assert_eq!(jar_id(&jar, &base), None);

        // A made-up id is no session either.
        let a = get_with_id(&base, "/sign-out", MADE_UP).await;
        assert!(a.shows(&["no session to sign out of: nothing was deleted"]));

        // With a session, it says what it did.
        get(&client, &base, "/").await;
        let a = get(&client, &base, "/sign-out").await;
        assert!(a.shows(&["signed out: session deleted, cookie expired"]));
        assert_eq!(a.set_id, Some((String::new(), Some(0))));
    }
}
