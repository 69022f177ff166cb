//! Clicks through `examples/axum.rs` and `examples/signin.rs` in a real
//! headless Chromium, as a person would. Everything is a real process on
//! 127.0.0.1: the examples (built with cargo, started with `PORT=0`, the OS
//! picks the port), `chromedriver` (started with `--port=0`, it prints the
//! port it picked), and one Chromium per WebDriver session, each with a fresh
//! profile of its own (two sessions are two independent browsers: separate
//! cookie jars). The test drives them over WebDriver with `fantoccini`; every
//! process is stopped by its id (chromedriver with its whole process group,
//! the browsers it started included).
//!
//! Flows: the axum demo and the sign-in example opened as `localhost` and as
//! `127.0.0.1` (with the cookie's default `Secure` flag: Chromium keeps and
//! sends it over plain HTTP on loopback, and refuses it on other names); the
//! devices page with two browsers signed in as one user ("sign out that
//! device", "sign out everywhere else", remember me); the sign-in callback
//! from a provider on another site (`localhost` vs `127.0.0.1`) carrying the
//! cookie with the default `SameSite=Lax` and losing it with `Strict`; and
//! the provider's back-channel sign-out.
//!
//! Needs `chromium` and `chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; or set `CHROMIUM` and `CHROMEDRIVER` to the binaries).
//! Without them the tests print a loud SKIP; under `CI=true` they fail
//! instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use fantoccini::cookies::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long a process start, a page load or an element may take to appear
/// before the test gives up: a guard against hanging, not a speed check.
const PATIENCE: Duration = Duration::from_secs(30);

/// The session cookie's name (the layer's default).
const COOKIE: &str = "id";

// ------------------------------------------------------------ processes

/// A process the test started, killed by its id when dropped. With `group`,
/// the process leads its own process group and the whole group is killed
/// (chromedriver's Chromium processes with it).
struct Proc {
    child: Child,
    group: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines of `out` until `find` picks a value out of one; the rest of
/// the output is drained in a thread, so the process never writes into a
/// closed pipe.
fn read_until<R, T>(out: R, what: &str, find: impl Fn(&str) -> Option<T>) -> T
where
    R: std::io::Read + Send + 'static,
{
    let mut out = BufReader::new(out);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "{what}: the output ended before it said: {seen}");
        seen.push_str(&line);
        if let Some(found) = find(&line) {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return found;
        }
    }
}

/// The example binaries, built once per test run with the features this test
/// was built with (so after `cargo test` the build finds them fresh).
fn example_binary(name: &str) -> PathBuf {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES
        .get_or_init(|| {
            let features: Vec<&str> = [
                ("serde", cfg!(feature = "serde")),
                ("axum", cfg!(feature = "axum")),
                ("redis", cfg!(feature = "redis")),
            ]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--example",
                "axum",
                "--example",
                "signin",
                "--message-format=json-render-diagnostics",
                "--no-default-features",
                "--features",
                &features.join(","),
            ]);
            if !cfg!(debug_assertions) {
                cmd.arg("--release");
            }
            let out = cmd.stderr(Stdio::inherit()).output().unwrap();
            assert!(out.status.success(), "cargo build of the examples failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact")
                .filter_map(|m| {
                    let name = m["target"]["name"].as_str()?.to_owned();
                    Some((name, PathBuf::from(m["executable"].as_str()?)))
                })
                .collect()
        })
        .get(name)
        .unwrap_or_else(|| panic!("cargo built no example {name}"))
        .clone()
}

/// A running example: the process and the first line it printed (which
/// names its URL, `http://127.0.0.1:PORT/`).
struct Example {
    _proc: Proc,
    port: u16,
    first_line: String,
}

/// Starts an example with `PORT=0` and `env`.
fn start_example(name: &str, env: &[(&str, &str)]) -> Example {
    let mut child = Command::new(example_binary(name))
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc {
        child,
        group: false,
    };
    let first_line = read_until(stdout, name, |line| Some(line.trim().to_owned()));
    let port = url_port(&first_line, "http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{name} printed no URL: {first_line:?}"));
    Example {
        _proc: proc,
        port,
        first_line,
    }
}

/// The port of the first URL in `text` that starts with `prefix`.
fn url_port(text: &str, prefix: &str) -> Option<u16> {
    text.split(prefix)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Finds a binary: the env variable `var`, else the first of `names` on
/// PATH, else the first of `fallbacks` that exists.
fn find_binary(var: &str, names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// What the browser tests need: Chromium and chromedriver.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// The tools, or `None` (after a loud SKIP) when one is missing outside CI.
/// Under `CI=true` a missing tool fails the test.
fn tools() -> Option<Tools> {
    let chromium = find_binary(
        "CHROMIUM",
        &[
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ],
        &["/usr/bin/chromium"],
    );
    let chromedriver = find_binary(
        "CHROMEDRIVER",
        &["chromedriver"],
        &["/usr/bin/chromedriver"],
    );
    let mut missing = Vec::new();
    if chromium.is_none() {
        missing.push(
            "no Chromium: `chromium` (or `chromium-browser`, `google-chrome`) is not on PATH \
             and CHROMIUM does not name a file",
        );
    }
    if chromedriver.is_none() {
        missing.push(
            "no chromedriver: `chromedriver` is not on PATH nor /usr/bin/chromedriver, and \
             CHROMEDRIVER does not name a file",
        );
    }
    if let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) {
        return Some(Tools {
            chromium,
            chromedriver,
        });
    }
    let msg = format!(
        "{}; install them with `apt-get install chromium chromium-driver`",
        missing.join("; ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {msg}");
    }
    // Straight to the process's stderr, past the test harness's output
    // capture, once per test binary: a skip must not look like a pass.
    static BANNER: std::sync::Once = std::sync::Once::new();
    BANNER.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n\
             ************************************************************************\n\
             SKIP tests/browser.rs: {msg}\n\
             ************************************************************************\n"
        );
    });
    None
}

/// A running chromedriver, which starts a Chromium for every session.
struct Driver {
    url: String,
    chromium: PathBuf,
    // Declared last: dropped after everything above.
    _proc: Proc,
}

impl Driver {
    fn start(tools: &Tools) -> Self {
        let mut child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(&tools.chromedriver)
                // The OS picks the port; chromedriver says which. It accepts
                // local connections only.
                .args(["--port=0", "--allowed-ips=127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let stdout = child.stdout.take().unwrap();
        let proc = Proc { child, group: true };
        // "ChromeDriver was started successfully on port 43291."
        let port = read_until(stdout, "chromedriver", |line| {
            url_port(line, "started successfully on port ")
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            chromium: tools.chromium.clone(),
            _proc: proc,
        }
    }

    /// A new headless Chromium with a fresh profile of its own.
    async fn browser(&self) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "tss-browser-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-extensions",
                    "--disable-sync",
                    "--disable-crash-reporter",
                    "--no-proxy-server",
                    // A host name that is not loopback, for the plain-HTTP
                    // `Secure` cookie check (served by 127.0.0.1).
                    "--host-resolver-rules=MAP dev.test 127.0.0.1",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = tokio::time::timeout(
            PATIENCE,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&self.url),
        )
        .await
        .expect("chromedriver did not start a browser in time")
        .expect("chromedriver could not start a browser");
        Browser {
            client: Some(client),
            profile,
        }
    }
}

/// One browser (a WebDriver session): a headless Chromium with its own
/// profile, so its own cookies.
struct Browser {
    client: Option<Client>,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a clean end `quit` has closed the browser; after a panic the
        // driver's process group is killed when the `Driver` drops.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Polls `check` until it gives a value; fails after [`PATIENCE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < PATIENCE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Browser {
    fn c(&self) -> &Client {
        self.client.as_ref().expect("the browser is open")
    }

    /// Ends the WebDriver session: Chromium quits.
    async fn quit(mut self) {
        if let Some(client) = self.client.take() {
            client.close().await.unwrap();
        }
    }

    /// Opens `url` like typing it into the address bar; returns when loaded.
    async fn open(&self, url: &str) -> Page {
        self.c().goto(url).await.unwrap();
        self.page().await
    }

    /// Loads the current page again.
    async fn reload(&self) -> Page {
        let before = self.document().await;
        self.c().refresh().await.unwrap();
        self.wait_for_new_document(before).await;
        self.page().await
    }

    /// The current document's root element, to tell when it is replaced.
    async fn document(&self) -> fantoccini::elements::Element {
        self.c().find(Locator::Css("html")).await.unwrap()
    }

    /// Waits until `before` is gone (a new document) and the new one loaded.
    async fn wait_for_new_document(&self, before: fantoccini::elements::Element) {
        wait_for("a new page", || {
            let before = before.clone();
            async move {
                // A stale element: the document it belonged to is gone.
                let gone = before.tag_name().await.is_err();
                let loaded = gone
                    && self
                        .c()
                        .execute("return document.readyState", vec![])
                        .await
                        .is_ok_and(|state| state == "complete");
                loaded.then_some(())
            }
        })
        .await;
    }

    /// Waits for the element `selector` on the current page.
    async fn element(&self, selector: &str) -> fantoccini::elements::Element {
        wait_for(&format!("{selector} on {}", self.url().await), || async {
            self.c().find(Locator::Css(selector)).await.ok()
        })
        .await
    }

    /// Whether the current page has an element `selector`.
    async fn has(&self, selector: &str) -> bool {
        !self
            .c()
            .find_all(Locator::Css(selector))
            .await
            .unwrap()
            .is_empty()
    }

    /// Clicks the element `selector` (a link or a button) and returns the
    /// page it leads to, once loaded.
    async fn click(&self, selector: &str) -> Page {
        let target = self.element(selector).await;
        let before = self.document().await;
        target.click().await.unwrap();
        self.wait_for_new_document(before).await;
        self.page().await
    }

    async fn url(&self) -> String {
        self.c()
            .current_url()
            .await
            .map_or_else(|e| format!("(no URL: {e})"), |u| u.to_string())
    }

    /// The session cookie the browser holds for the current page.
    async fn cookie(&self) -> Option<Cookie<'static>> {
        self.c()
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == COOKIE)
    }

    /// What the browser shows now.
    async fn page(&self) -> Page {
        let text = self
            .c()
            .execute("return document.body.innerText", vec![])
            .await
            .unwrap();
        let cookie = self.cookie().await;
        if let Some(c) = &cookie {
            // The layer's defaults, whatever the page.
            assert_eq!(c.secure(), Some(true), "the Secure default: {c:?}");
            assert_eq!(c.http_only(), Some(true), "{c:?}");
        }
        Page {
            url: self.url().await,
            text: text.as_str().unwrap_or_default().to_owned(),
            id: cookie.map(|c| c.value().to_owned()),
        }
    }

    /// Signs in with the axum demo's form on the page open now, with or
    /// without "remember me"; returns the devices page it leads to.
    async fn sign_in(&self, user: &str, remember: bool) -> Page {
        let base = self.url().await;
        let base = base.split('/').take(3).collect::<Vec<_>>().join("/");
        let form = "#sign-in-form";
        let name = self.element(&format!("{form} input[name=user]")).await;
        name.clear().await.unwrap();
        name.send_keys(user).await.unwrap();
        let remember_box = self.element(&format!("{form} input[name=remember]")).await;
        if remember_box.is_selected().await.unwrap() != remember {
            remember_box.click().await.unwrap();
        }
        let p = self.click(&format!("{form} button#sign-in")).await;
        assert!(p.url.starts_with(&format!("{base}/devices")), "{p:#?}");
        p
    }
}

/// A loaded page: its URL, its visible text and the `id` cookie the browser
/// holds for it.
#[derive(Debug)]
struct Page {
    url: String,
    text: String,
    id: Option<String>,
}

impl Page {
    fn shows(&self, line: &str) -> bool {
        self.text.lines().any(|l| l.trim() == line)
    }

    fn host(&self) -> &str {
        let rest = self.url.strip_prefix("http://").unwrap_or(&self.url);
        rest.split(':').next().unwrap_or_default()
    }
}

macro_rules! expect_page {
    ($page:expr, shows $line:expr) => {{
        let page = $page;
        assert!(page.shows($line), "expected {:?} on {page:#?}", $line);
        page
    }};
}

/// The session cookie's expiry, `None` for a cookie that ends with the
/// browser session.
fn expiry(cookie: &Cookie<'_>) -> Option<SystemTime> {
    cookie
        .expires_datetime()
        .map(|at| SystemTime::UNIX_EPOCH + Duration::from_secs(at.unix_timestamp() as u64))
}

// ------------------------------------------------------------------ flows

const HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// The demo: visit, visit again (the counter is written to the session and
/// read back), sign in (a write and a new id), who am I (a read), the counter
/// moved with the session, sign out, and sign out again.
#[tokio::test]
async fn the_axum_demo_clicked_through_on_localhost_and_127_0_0_1() {
    let Some(tools) = tools() else { return };
    let app = start_example("axum", &[]);
    let driver = Driver::start(&tools);
    for host in HOSTS {
        // A fresh browser (profile) per host: nothing carried over.
        let tab = driver.browser().await;
        let started = Instant::now();
        let base = format!("http://{host}:{}", app.port);

        let p = expect_page!(tab.open(&format!("{base}/")).await, shows "visits: 1");
        assert!(p.shows("not signed in"), "{p:#?}");
        assert_eq!(p.host(), host);
        let first = p.id.clone().expect("the first visit sets the id cookie");
        let cookie = tab.cookie().await.unwrap();
        assert_eq!(
            cookie.same_site(),
            Some(cookie::SameSite::Lax),
            "{cookie:?}"
        );

        let p = expect_page!(tab.click("#visit").await, shows "visits: 2");
        assert_eq!(p.id.as_ref(), Some(&first), "the browser kept the session");

        let p = expect_page!(tab.sign_in("alice", false).await, shows "signed in as: alice");
        let signed_in = p.id.clone().expect("still a session");
        assert_ne!(signed_in, first, "sign-in cycles the id");

        let p = expect_page!(tab.click("#me").await, shows "signed in as: alice");
        assert_eq!(p.id.as_ref(), Some(&signed_in));

        let p = expect_page!(tab.click("#visit").await, shows "visits: 3");
        assert!(p.shows("signed in as: alice"), "{p:#?}");

        let p = expect_page!(
            tab.click("#sign-out button").await,
            shows "signed out: session deleted, cookie expired"
        );
        assert_eq!(p.id, None, "the cookie is gone");

        expect_page!(tab.click("#me").await, shows "not signed in");
        expect_page!(
            tab.click("#sign-out button").await,
            shows "no session to sign out of: nothing was deleted"
        );
        eprintln!("axum demo on {host}: {:?}", started.elapsed());
        tab.quit().await;
    }

    // Any other host name over plain HTTP: Chromium refuses the `Secure`
    // cookie, so every request starts a new session (the README's
    // troubleshooting entry).
    let tab = driver.browser().await;
    let p = expect_page!(
        tab.open(&format!("http://dev.test:{}/", app.port)).await,
        shows "visits: 1"
    );
    assert_eq!(p.id, None, "no Secure cookie over http:// off loopback");
    expect_page!(tab.click("#visit").await, shows "visits: 1");
    tab.quit().await;
}

/// The devices page, with two browsers (two profiles, two cookie jars)
/// signed in as one user: the first signs the second out, then "sign out
/// everywhere else"; and "remember me" decides whether the cookie outlives
/// the browser.
#[tokio::test]
async fn the_devices_page_signs_another_browser_out() {
    let Some(tools) = tools() else { return };
    let app = start_example("axum", &[]);
    let driver = Driver::start(&tools);
    let (a, b) = tokio::join!(driver.browser(), driver.browser());
    let base = format!("http://127.0.0.1:{}", app.port);
    let started = Instant::now();

    // Both open a page that only reads the session (no cookie yet).
    let me = format!("{base}/me");
    tokio::join!(a.open(&me), b.open(&me));
    assert!(a.cookie().await.is_none() && b.cookie().await.is_none());

    // A signs in without "remember me": a cookie that ends with the browser.
    let p = expect_page!(a.sign_in("carol", false).await, shows "signed in as: carol");
    let cookie = a.cookie().await.expect("signed in: a cookie");
    assert_eq!(
        expiry(&cookie),
        None,
        "no remember me, no expiry: {cookie:?}"
    );
    assert!(p.id.is_some());

    // B signs in as the same user with "remember me": 30 days ahead.
    expect_page!(b.sign_in("carol", true).await, shows "signed in as: carol");
    let cookie = b.cookie().await.expect("signed in: a cookie");
    let ahead = expiry(&cookie)
        .expect("remember me: a cookie with an expiry")
        .duration_since(SystemTime::now())
        .expect("an expiry in the future");
    let day = Duration::from_secs(86_400);
    assert!(
        ahead > 29 * day && ahead <= 30 * day + Duration::from_secs(60),
        "remember me: {ahead:?} ahead, not ~30 days ({cookie:?})"
    );

    // A's devices page lists both, A's own marked.
    a.reload().await;
    devices_of(&a, 2).await;

    // A signs B out.
    a.click("li.device:not(.current) button.end").await;
    a.element("li.device.current").await;
    devices_of(&a, 1).await;
    b.reload().await;
    b.element("#signed-out").await;
    assert!(!b.has("li.device").await, "B is signed out");
    a.reload().await;
    devices_of(&a, 1).await;

    // B signs in again; A signs out everywhere else.
    // (B's page, signed out, has the sign-in form.)
    b.sign_in("carol", false).await;
    a.reload().await;
    devices_of(&a, 2).await;
    a.click("#end-others").await;
    devices_of(&a, 1).await;
    b.reload().await;
    b.element("#signed-out").await;
    a.reload().await;
    devices_of(&a, 1).await;
    expect_page!(a.open(&format!("{base}/me")).await, shows "signed in as: carol");
    eprintln!("devices page, two browsers: {:?}", started.elapsed());
    tokio::join!(a.quit(), b.quit());
}

/// Checks the devices page open in `tab`: `n` devices, exactly one marked
/// as this one, each with its created and last-seen times.
async fn devices_of(tab: &Browser, n: usize) {
    let devices = tab.c().find_all(Locator::Css("li.device")).await.unwrap();
    let page = tab.page().await;
    assert_eq!(devices.len(), n, "{page:#?}");
    let mut current = 0;
    for device in &devices {
        let class = device.attr("class").await.unwrap().unwrap_or_default();
        let text = device.text().await.unwrap();
        if class.split_whitespace().any(|c| c == "current") {
            current += 1;
            assert!(text.contains("this device"), "{text:?}");
        } else {
            assert!(!text.contains("this device"), "{text:?}");
            device.find(Locator::Css("button.end")).await.unwrap();
        }
        for part in [".created", ".last-seen"] {
            let at = device.find(Locator::Css(part)).await.unwrap();
            assert!(
                !at.text().await.unwrap().trim().is_empty(),
                "{part}: {text:?}"
            );
        }
    }
    assert_eq!(current, 1, "one device is this one: {page:#?}");
}

/// Signs in through the stand-in provider from the app's page open in
/// `tab`: the app's sign-in link, the provider's consent page (on another
/// site: `localhost`), its button, and the way back to the app's callback.
/// Returns the page the callback leads to.
async fn sign_in_at_provider(tab: &Browser, provider: &str) -> Page {
    let p = tab.click("#start").await;
    assert!(
        p.url.starts_with(&format!("{provider}/")),
        "the provider's consent page: {p:#?}"
    );
    tab.click("button#consent").await
}

/// The sign-in example: sign in through the stand-in provider (a consent
/// page on another site), land on a page with the way on, go home, sign out
/// with the button, find the way back in from the 401 page; then sign out
/// at the provider, whose back-channel logout ends the app's session.
#[tokio::test]
async fn the_sign_in_example_clicked_through_on_localhost_and_127_0_0_1() {
    let Some(tools) = tools() else { return };
    let app = start_example("signin", &[]);
    let provider = provider_url(&app);
    let driver = Driver::start(&tools);
    for host in HOSTS {
        // A fresh browser (profile) per host: nothing carried over.
        let tab = driver.browser().await;
        let started = Instant::now();
        let base = format!("http://{host}:{}", app.port);

        let p = expect_page!(tab.open(&format!("{base}/")).await, shows "Not signed in.");
        assert_eq!(p.id, None, "a page view starts no session");

        // Through the provider and back, on the host the browser started on.
        // Opened as 127.0.0.1 the way back is cross-site (the provider is on
        // localhost): the default `SameSite=Lax` cookie still comes along.
        let p = sign_in_at_provider(&tab, &provider).await;
        assert!(
            p.text
                .contains("Signed in as Alice Example <alice@example.com>"),
            "{p:#?}"
        );
        assert_eq!(p.url, format!("{base}/me"));
        assert!(p.text.contains("tokens kept server-side"), "{p:#?}");
        let id = p.id.clone().expect("signed in: a session cookie");
        let cookie = tab.cookie().await.unwrap();
        assert_eq!(
            cookie.same_site(),
            Some(cookie::SameSite::Lax),
            "{cookie:?}"
        );

        let p = tab.click("#home").await;
        assert!(p.text.contains("Signed in as Alice Example"), "{p:#?}");
        assert_eq!(p.id.as_ref(), Some(&id));

        let p = expect_page!(tab.click("#sign-out").await, shows "Not signed in.");
        assert_eq!(p.url, format!("{base}/"));
        assert_eq!(p.id, None, "sign-out expired the cookie");

        // The 401 page offers the way back in.
        let p = expect_page!(tab.click("#me").await, shows "Not signed in.");
        assert_eq!(p.url, format!("{base}/me"));
        let p = sign_in_at_provider(&tab, &provider).await;
        assert!(p.text.contains("Signed in as Alice Example"), "{p:#?}");
        assert_ne!(p.id, Some(id), "a new sign-in, a new id");

        // Sign out at the provider: its back-channel logout ends this
        // login's session at the app, seen on the app's next page load.
        let sid = tab.element("#sid").await.text().await.unwrap();
        let sid = sid.trim().to_owned();
        assert!(!sid.is_empty(), "the provider login's sid on {p:#?}");
        tab.open(&format!("{provider}/")).await;
        let p = tab
            .click(&format!(
                "li.login[data-sid=\"{sid}\"] button.provider-sign-out"
            ))
            .await;
        let result = tab.element("#backchannel-result").await;
        assert_eq!(
            result.attr("data-status").await.unwrap().as_deref(),
            Some("200"),
            "the app accepted the logout token: {p:#?}"
        );
        let p = expect_page!(tab.open(&format!("{base}/me")).await, shows "Not signed in.");
        assert!(!p.text.contains("Signed in as"), "{p:#?}");
        eprintln!("sign-in example on {host}: {:?}", started.elapsed());
        tab.quit().await;
    }
}

/// With `SameSite=Strict` the browser leaves the cookie out of the
/// cross-site way back from the provider (`localhost`) to the app
/// (`127.0.0.1`): the callback finds no sign-in state and nobody is signed
/// in. This is why the default is `Lax`. Opened as `localhost` (the
/// provider's site) the same app signs in: the cookie itself works.
#[tokio::test]
async fn with_same_site_strict_the_cross_site_callback_loses_the_session() {
    let Some(tools) = tools() else { return };
    let app = start_example("signin", &[("SAME_SITE", "strict")]);
    let provider = provider_url(&app);
    let driver = Driver::start(&tools);
    let tab = driver.browser().await;
    let started = Instant::now();

    let base = format!("http://127.0.0.1:{}", app.port);
    expect_page!(tab.open(&format!("{base}/")).await, shows "Not signed in.");
    let p = sign_in_at_provider(&tab, &provider).await;
    assert!(
        p.url.starts_with(&format!("{base}/callback")),
        "the provider sent the browser back: {p:#?}"
    );
    assert!(!p.text.contains("Signed in as"), "{p:#?}");
    let cookie = tab.cookie().await.expect("the sign-in state's session");
    assert_eq!(
        cookie.same_site(),
        Some(cookie::SameSite::Strict),
        "{cookie:?}"
    );
    let p = expect_page!(tab.open(&format!("{base}/me")).await, shows "Not signed in.");
    assert!(!p.text.contains("Signed in as"), "{p:#?}");

    // Same site as the provider: the Strict cookie comes along.
    tab.quit().await;
    let tab = driver.browser().await;
    let base = format!("http://localhost:{}", app.port);
    expect_page!(tab.open(&format!("{base}/")).await, shows "Not signed in.");
    let p = sign_in_at_provider(&tab, &provider).await;
    assert_eq!(p.url, format!("{base}/me"));
    assert!(p.text.contains("Signed in as Alice Example"), "{p:#?}");
    eprintln!("SameSite=Strict: {:?}", started.elapsed());
    tab.quit().await;
}

/// The stand-in provider's base URL, from the sign-in example's first line
/// (`... stand-in OpenID provider on http://localhost:PORT2/ ...`).
fn provider_url(app: &Example) -> String {
    let port = url_port(&app.first_line, "http://localhost:").unwrap_or_else(|| {
        panic!(
            "the sign-in example names no provider on http://localhost: {:?}",
            app.first_line
        )
    });
    format!("http://localhost:{port}")
}
