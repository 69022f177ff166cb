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

/// The axum demo's devices page: the sessions of the signed-in user
/// (`SessionRegistry::list`), "sign out that device" (`end`), "sign out
/// everywhere else" (`end_all` with a keep), and "remember me"
/// (`set_idle_timeout` + `set_persistent_cookie`).
mod axum_devices {
    use super::*;
    use reqwest::header::{LOCATION, SET_COOKIE};
    use reqwest::redirect::Policy;

    /// One browser: a client that follows redirects and one that stops at
    /// each, sharing a cookie jar.
    struct Device {
        follow: Client,
        step: Client,
        jar: Arc<Jar>,
    }

    impl Device {
        fn new() -> Self {
            let (follow, jar) = browser();
            let step = Client::builder()
                .cookie_provider(jar.clone())
                .redirect(Policy::none())
                .no_proxy()
                .build()
                .unwrap();
            Self { follow, step, jar }
        }

        /// Signs in with the form, as the sign-in button does; returns the
        /// `303` response (not followed).
        async fn sign_in(&self, base: &Url, user: &str, remember: bool) -> reqwest::Response {
            let mut form = vec![("user", user)];
            if remember {
                form.push(("remember", "1"));
            }
            let res = self
                .step
                .post(base.join("/sign-in").unwrap())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "{user}");
            assert_eq!(res.headers()[LOCATION], "/devices");
            res
        }

        async fn page(&self, base: &Url, path: &str) -> Answer {
            get(&self.follow, base, path).await
        }

        async fn devices(&self, base: &Url) -> Vec<Listed> {
            let a = self.page(base, "/devices").await;
            assert_eq!(a.status, StatusCode::OK, "{a:?}");
            listed(&a.raw)
        }

        /// `POST path`, not followed: the status.
        async fn post(&self, base: &Url, path: &str) -> (StatusCode, Option<String>) {
            let res = self
                .step
                .post(base.join(path).unwrap())
                .send()
                .await
                .unwrap();
            let location = res
                .headers()
                .get(LOCATION)
                .map(|v| v.to_str().unwrap().to_owned());
            (res.status(), location)
        }

        async fn signed_in_as(&self, base: &Url, user: &str) -> bool {
            let a = self.page(base, "/me").await;
            a.shows(&[&format!("signed in as: {user}")])
        }

        async fn signed_out(&self, base: &Url) -> bool {
            let a = self.page(base, "/me").await;
            a.shows(&["not signed in"]) && a.raw.contains("<p id=\"signed-out\">")
        }
    }

    /// One `<li class="device…">` of the devices page.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Listed {
        public_id: String,
        current: bool,
        /// Whether it offers "Sign out that device".
        has_end_button: bool,
        created: String,
        last_seen: String,
    }

    fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
        let from = s.find(start).unwrap() + start.len();
        let len = s[from..].find(end).unwrap();
        &s[from..from + len]
    }

    fn listed(raw: &str) -> Vec<Listed> {
        let list = between(raw, "<ul id=\"devices\">", "</ul>");
        list.split("<li ")
            .skip(1)
            .map(|li| {
                let class = between(li, "class=\"", "\"");
                assert!(class.split(' ').any(|c| c == "device"), "{li}");
                let current = class.split(' ').any(|c| c == "current");
                let public_id = between(li, "data-public-id=\"", "\"").to_owned();
                let has_end_button = li.contains(&format!(
                    "<form method=\"post\" action=\"/devices/{public_id}/end\">\
                     <button class=\"end\" type=\"submit\">Sign out that device</button></form>"
                ));
                if current {
                    assert!(li.contains("this device"), "{li}");
                }
                Listed {
                    public_id,
                    current,
                    has_end_button,
                    created: between(li, "<span class=\"created\">", "</span>").to_owned(),
                    last_seen: between(li, "<span class=\"last-seen\">", "</span>").to_owned(),
                }
            })
            .collect()
    }

    fn current(list: &[Listed]) -> &Listed {
        let mut it = list.iter().filter(|d| d.current);
        let one = it.next().expect("this device is marked");
        assert!(it.next().is_none(), "one current device: {list:?}");
        one
    }

    fn ids(list: &[Listed]) -> Vec<String> {
        let mut ids: Vec<_> = list.iter().map(|d| d.public_id.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn the_devices_page_lists_the_users_sessions_and_marks_this_one() {
        let base = start(Demo::Axum).await;
        let (laptop, phone, bobs) = (Device::new(), Device::new(), Device::new());
        laptop.sign_in(&base, "alice", false).await;
        phone.sign_in(&base, "alice", false).await;
        bobs.sign_in(&base, "bob", false).await;

        let from_laptop = laptop.devices(&base).await;
        let from_phone = phone.devices(&base).await;
        assert_eq!(from_laptop.len(), 2, "{from_laptop:?}");
        assert_eq!(ids(&from_laptop), ids(&from_phone), "the same two sessions");
        let (l, p) = (current(&from_laptop), current(&from_phone));
        assert_ne!(l.public_id, p.public_id, "each marks itself");
        for d in &from_laptop {
            assert_eq!(d.public_id.len(), 32);
            assert_eq!(d.has_end_button, !d.current, "{d:?}");
            assert!(
                d.created.ends_with(" UTC") && d.created.len() == 23,
                "{d:?}"
            );
            assert!(
                d.last_seen.ends_with(" UTC") && d.last_seen >= d.created,
                "{d:?}"
            );
        }
        let page = laptop.page(&base, "/devices").await;
        assert!(page.raw.contains(
            "<form method=\"post\" action=\"/devices/end-others\">\
             <button id=\"end-others\" type=\"submit\">Sign out everywhere else</button></form>"
        ));

        // Bob sees his own session only; a public id is not a cookie.
        let bob = bobs.devices(&base).await;
        assert_eq!(bob.len(), 1);
        assert!(bob[0].current && !ids(&from_laptop).contains(&bob[0].public_id));
        let a = get_with_id(&base, "/me", &bob[0].public_id).await;
        assert!(a.shows(&["not signed in"]), "{a:?}");

        // Home says who, with the way to the devices page.
        let home = laptop.page(&base, "/").await;
        assert!(
            home.raw.contains("<span id=\"user\">alice</span>"),
            "{home:?}"
        );
        assert!(home.raw.contains("<a id=\"devices\" href=\"/devices\">"));
    }

    #[tokio::test]
    async fn signed_out_the_devices_page_says_so() {
        let base = start(Demo::Axum).await;
        let stranger = Device::new();
        let a = stranger.page(&base, "/devices").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.raw.contains("<p id=\"signed-out\">"), "{a:?}");
        assert!(a.raw.contains("href=\"/\""));
        assert!(!a.raw.contains("<ul id=\"devices\">"));
        assert_eq!(a.set_id, None);
        assert!(jar_id(&stranger.jar, &base).is_none());
    }

    #[tokio::test]
    async fn ending_the_other_device_signs_it_out_on_its_next_request() {
        let base = start(Demo::Axum).await;
        let (laptop, phone) = (Device::new(), Device::new());
        laptop.sign_in(&base, "alice", false).await;
        phone.sign_in(&base, "alice", false).await;
        let list = laptop.devices(&base).await;
        let other = list.iter().find(|d| !d.current).unwrap().public_id.clone();

        let (status, location) = laptop.post(&base, &format!("/devices/{other}/end")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/devices"));

        let list = laptop.devices(&base).await;
        assert_eq!(list.len(), 1, "{list:?}");
        assert!(list[0].current && list[0].public_id != other);
        assert!(laptop.signed_in_as(&base, "alice").await);

        // The phone still holds its cookie, which now names nothing.
        assert!(jar_id(&phone.jar, &base).is_some());
        assert!(phone.signed_out(&base).await);
        let a = phone.page(&base, "/devices").await;
        assert!(a.raw.contains("<p id=\"signed-out\">"), "{a:?}");

        // Ending it again: no longer one of alice's sessions.
        let (status, _) = laptop.post(&base, &format!("/devices/{other}/end")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn sign_out_everywhere_else_keeps_this_one_and_other_users() {
        let base = start(Demo::Axum).await;
        let devices: Vec<Device> = (0..3).map(|_| Device::new()).collect();
        for d in &devices {
            d.sign_in(&base, "alice", false).await;
        }
        let bobs = Device::new();
        bobs.sign_in(&base, "bob", false).await;
        let mine = current(&devices[0].devices(&base).await).public_id.clone();

        let (status, location) = devices[0].post(&base, "/devices/end-others").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/devices"));

        let list = devices[0].devices(&base).await;
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].public_id, mine);
        assert!(devices[0].signed_in_as(&base, "alice").await);
        for d in &devices[1..] {
            assert!(d.signed_out(&base).await);
        }
        assert!(bobs.signed_in_as(&base, "bob").await);
        assert_eq!(bobs.devices(&base).await.len(), 1);

        // Signed out, the button ends nothing and says where to go.
        let (status, location) = devices[1].post(&base, "/devices/end-others").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location.as_deref(), Some("/devices"));
        assert!(devices[0].signed_in_as(&base, "alice").await);
    }

    #[tokio::test]
    async fn another_users_device_is_404_and_a_malformed_id_is_400() {
        let base = start(Demo::Axum).await;
        let (alice, bob, stranger) = (Device::new(), Device::new(), Device::new());
        alice.sign_in(&base, "alice", false).await;
        bob.sign_in(&base, "bob", false).await;
        let bobs_id = current(&bob.devices(&base).await).public_id.clone();

        let (status, _) = alice.post(&base, &format!("/devices/{bobs_id}/end")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Signed out, no public id is yours.
        let (status, _) = stranger
            .post(&base, &format!("/devices/{bobs_id}/end"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // A well-formed id nobody has.
        let (status, _) = alice
            .post(&base, &format!("/devices/{}/end", "0".repeat(32)))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(bob.signed_in_as(&base, "bob").await);

        let long = "a".repeat(10_000);
        for bad in [
            "nope",
            &bobs_id.to_uppercase(),
            &bobs_id[..31],
            &format!("{bobs_id}0"),
            "%00%00",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "%F0%9F%92%A9",
            &long,
        ] {
            let (status, _) = alice.post(&base, &format!("/devices/{bad}/end")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:.40}");
        }
        // Only POST ends a device.
        let a = alice.page(&base, &format!("/devices/{bobs_id}/end")).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(bob.signed_in_as(&base, "bob").await);
        assert!(alice.signed_in_as(&base, "alice").await);
    }

    #[tokio::test]
    async fn ending_this_device_by_its_id_signs_it_out() {
        let base = start(Demo::Axum).await;
        let alice = Device::new();
        alice.sign_in(&base, "alice", false).await;
        let mine = current(&alice.devices(&base).await).public_id.clone();
        let res = alice
            .step
            .post(base.join(&format!("/devices/{mine}/end")).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let expired = res.headers()[SET_COOKIE].to_str().unwrap();
        assert!(expired.starts_with("id=;") && expired.contains("Max-Age=0"));
        assert!(alice.signed_out(&base).await);
    }

    /// The `Max-Age` of the `id` cookie a response sets, if it sets one.
    fn id_cookie(res: &reqwest::Response) -> (String, Option<u64>) {
        let cookies: Vec<_> = res.cookies().filter(|c| c.name() == "id").collect();
        assert_eq!(cookies.len(), 1, "one id cookie");
        let c = &cookies[0];
        (c.value().to_owned(), c.max_age().map(|d| d.as_secs()))
    }

    #[tokio::test]
    async fn remember_me_gives_the_cookie_a_30_day_max_age_and_without_it_none() {
        let base = start(Demo::Axum).await;
        let thirty_days = axum_example::REMEMBER_FOR.as_secs();
        assert_eq!(thirty_days, 30 * 86_400);

        let remembered = Device::new();
        let res = remembered.sign_in(&base, "alice", true).await;
        let (id, max_age) = id_cookie(&res);
        assert_eq!(id.len(), 36);
        let max_age = max_age.expect("remember me: a persistent cookie");
        assert!(
            (thirty_days - 120..=thirty_days).contains(&max_age),
            "Max-Age {max_age}"
        );

        let forgotten = Device::new();
        let res = forgotten.sign_in(&base, "alice", false).await;
        let (id, max_age) = id_cookie(&res);
        assert_eq!(id.len(), 36);
        assert_eq!(max_age, None, "a browser-session cookie");

        // The choice is the session's own: the devices page shows it, and
        // a later request on the forgotten one gets no Max-Age either.
        let list = remembered.devices(&base).await;
        let page = remembered.page(&base, "/devices").await;
        assert_eq!(list.len(), 2);
        assert_eq!(page.raw.matches(", remembered").count(), 1, "{page:?}");
        assert!(forgotten.signed_in_as(&base, "alice").await);
        let a = forgotten.page(&base, "/").await;
        assert!(!matches!(a.set_id, Some((_, Some(_)))), "{a:?}");

        // Signing in again without the box undoes it: a browser-session
        // cookie again.
        let res = remembered.sign_in(&base, "alice", false).await;
        let (_, max_age) = id_cookie(&res);
        assert_eq!(max_age, None, "remember me is not sticky");
        let page = remembered.page(&base, "/devices").await;
        assert_eq!(page.raw.matches(", remembered").count(), 0, "{page:?}");
    }

    #[tokio::test]
    async fn a_bad_sign_in_form_is_refused_and_stores_nothing() {
        let base = start(Demo::Axum).await;
        let d = Device::new();
        for form in [
            vec![],
            vec![("user", "")],
            vec![("user", "<script>")],
            vec![("user", "a b")],
            vec![("name", "alice")],
        ] {
            let res = d
                .step
                .post(base.join("/sign-in").unwrap())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{form:?}");
            assert!(res.headers().get(SET_COOKIE).is_none());
        }
        assert!(jar_id(&d.jar, &base).is_none());
    }
}
