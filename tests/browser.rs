//! Clicks through `examples/axum.rs` and `examples/signin.rs` in a real
//! headless Chromium, as a person would: the examples run as their own
//! processes (built with cargo, started with `PORT=0`, the OS picks the
//! port), Chromium runs with a fresh profile, and the test drives it over the
//! DevTools protocol (a small client over one websocket). Every flow runs
//! twice: opened as `localhost` and as `127.0.0.1`, with the cookie's default
//! `Secure` flag on (Chromium keeps and sends it over plain HTTP on loopback).
//!
//! Needs `chromium` (Debian package `chromium`; or set `CHROMIUM` to a
//! Chromium or Chrome binary). Without it the tests print a loud SKIP; under
//! `CI=true` they fail instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools call, page load or process start may take before
/// the test gives up (a guard against hanging, not a speed check).
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ processes

/// A process the test started, killed by its id when dropped. With `group`,
/// the process leads its own process group and the whole group is killed
/// (Chromium's renderer and helper processes with it).
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

/// Starts an example with `PORT=0` and returns it with the port it printed
/// (its first line names `http://127.0.0.1:PORT/`).
fn start_example(name: &str) -> (Proc, u16) {
    let mut child = Command::new(example_binary(name))
        .env("PORT", "0")
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
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // Keep reading what it prints, so that it never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let port = first
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{name} printed no URL: {first:?}"));
    (proc, port)
}

/// The Chromium binary, or `None` (after a loud SKIP) when there is none
/// outside CI. Under `CI=true` a missing Chromium fails the test.
fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("CHROMIUM")
        .map(|c| vec![PathBuf::from(c)])
        .unwrap_or_default();
    let on_path = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(move |dir| dir.join(name))
            .collect::<Vec<_>>()
    });
    if let Some(found) = candidates.into_iter().chain(on_path).find(|p| p.is_file()) {
        return Some(found);
    }
    let msg = "no Chromium: `chromium` (or `chromium-browser`, `google-chrome`) is not on \
               PATH and CHROMIUM is not set; install it with `apt-get install chromium`";
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

/// A headless Chromium with a fresh profile, and a DevTools connection to
/// its first tab.
struct Browser {
    page: Cdp,
    _proc: Proc,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // `_proc` is dropped after this: the process group is killed first.
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    async fn start(binary: &Path) -> Self {
        let profile = std::env::temp_dir().join(format!(
            "tss-browser-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = {
            use std::os::unix::process::CommandExt as _;
            Command::new(binary)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-extensions",
                    "--disable-sync",
                    "--no-proxy-server",
                    // A host name that is not loopback, for the plain-HTTP
                    // `Secure` cookie check (served by 127.0.0.1).
                    "--host-resolver-rules=MAP dev.test 127.0.0.1",
                    "--remote-debugging-port=0",
                    "--remote-allow-origins=*",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let proc = Proc { child, group: true };

        // Chromium writes its DevTools port into the profile once it listens.
        let port_file = profile.join("DevToolsActivePort");
        let started = Instant::now();
        let port: u16 = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(started.elapsed() < PATIENCE, "Chromium did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let targets = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let targets: Vec<Value> = serde_json::from_str(&targets).unwrap();
        let ws = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let (ws, _) = tokio_tungstenite::connect_async(ws.as_str()).await.unwrap();
        let mut page = Cdp {
            ws,
            next_id: 0,
            events: VecDeque::new(),
        };
        page.call("Page.enable", json!({})).await;
        page.call("Network.enable", json!({})).await;
        Self {
            page,
            _proc: proc,
            profile,
        }
    }
}

// ------------------------------------------------------ DevTools protocol

/// A DevTools-protocol session with one tab: numbered calls, and the events
/// that arrive in between, kept in order.
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<Value>,
}

impl Cdp {
    async fn next_message(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("Chromium stopped answering")
                .expect("the DevTools connection closed")
                .unwrap();
            if let Message::Text(text) = msg {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    /// Calls `method` and returns its result; a protocol error fails the test.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
        loop {
            let msg = self.next_message().await;
            if msg["id"] == id {
                assert!(msg["error"].is_null(), "{method}: {msg}");
                return msg["result"].clone();
            }
            if msg.get("method").is_some() {
                self.events.push_back(msg);
            }
        }
    }

    /// Waits for the event `method` (one already queued counts).
    async fn event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            let event = self.events.remove(i).unwrap();
            self.events.drain(..i);
            return event;
        }
        self.events.clear();
        loop {
            let msg = self.next_message().await;
            if msg["method"] == method {
                return msg;
            }
        }
    }

    /// Evaluates `js` in the page and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true }),
            )
            .await;
        assert!(r["exceptionDetails"].is_null(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Opens `url` like typing it into the address bar; returns when loaded.
    async fn open(&mut self, url: &str) -> Page {
        self.events.clear();
        let r = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(r["errorText"].is_null(), "{url}: {r}");
        self.event("Page.loadEventFired").await;
        self.page().await
    }

    /// Clicks the element `selector` (a link or a button) and returns the
    /// page it leads to, once loaded.
    async fn click(&mut self, selector: &str) -> Page {
        self.events.clear();
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return false; e.click(); return true; }})()",
                sel = Value::from(selector)
            ))
            .await;
        assert_eq!(found, true, "no {selector} on the page to click");
        self.event("Page.loadEventFired").await;
        self.page().await
    }

    /// What the tab shows now.
    async fn page(&mut self) -> Page {
        let url = self.eval("location.href").await;
        let text = self.eval("document.body.innerText").await;
        let cookies = self
            .call("Network.getCookies", json!({ "urls": [url] }))
            .await;
        let id = cookies["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "id")
            .map(|c| {
                assert_eq!(c["secure"], true, "the Secure default: {c}");
                assert_eq!(c["httpOnly"], true, "{c}");
                assert_eq!(c["sameSite"], "Lax", "{c}");
                c["value"].as_str().unwrap().to_owned()
            });
        Page {
            url: url.as_str().unwrap().to_owned(),
            text: text.as_str().unwrap_or_default().to_owned(),
            id,
        }
    }

    async fn clear_cookies(&mut self) {
        self.call("Network.clearBrowserCookies", json!({})).await;
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

// ------------------------------------------------------------------ flows

const HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// The demo: visit, visit again (the counter is written to the session and
/// read back), sign in (a write and a new id), who am I (a read), the counter
/// moved with the session, sign out, and sign out again.
#[tokio::test]
async fn the_axum_demo_clicked_through_on_localhost_and_127_0_0_1() {
    let Some(chromium) = chromium() else { return };
    let (_server, port) = start_example("axum");
    let mut browser = Browser::start(&chromium).await;
    let tab = &mut browser.page;
    for host in HOSTS {
        let started = Instant::now();
        tab.clear_cookies().await;
        let base = format!("http://{host}:{port}");

        let p = expect_page!(tab.open(&format!("{base}/")).await, shows "visits: 1");
        assert!(p.shows("not signed in"), "{p:#?}");
        assert_eq!(p.host(), host);
        let first = p.id.clone().expect("the first visit sets the id cookie");

        let p = expect_page!(tab.click("#visit").await, shows "visits: 2");
        assert_eq!(p.id.as_ref(), Some(&first), "the browser kept the session");

        let p = expect_page!(tab.click("#sign-in button").await, shows "signed in as: alice");
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
    }

    // Any other host name over plain HTTP: Chromium refuses the `Secure`
    // cookie, so every request starts a new session (the README's
    // troubleshooting entry).
    tab.clear_cookies().await;
    let p = expect_page!(tab.open(&format!("http://dev.test:{port}/")).await, shows "visits: 1");
    assert_eq!(p.id, None, "no Secure cookie over http:// off loopback");
    expect_page!(tab.click("#visit").await, shows "visits: 1");
}

/// The sign-in example: sign in through the stand-in provider, land on a
/// page with the way on, go home, sign out with the button, and find the
/// way back in from the 401 page.
#[tokio::test]
async fn the_sign_in_example_clicked_through_on_localhost_and_127_0_0_1() {
    let Some(chromium) = chromium() else { return };
    let (_server, port) = start_example("signin");
    let mut browser = Browser::start(&chromium).await;
    let tab = &mut browser.page;
    for host in HOSTS {
        let started = Instant::now();
        tab.clear_cookies().await;
        let base = format!("http://{host}:{port}");

        let p = expect_page!(tab.open(&format!("{base}/")).await, shows "Not signed in.");
        assert_eq!(p.id, None, "a page view starts no session");

        // Through the provider and back, on the host the browser started on.
        let p = tab.click("#start").await;
        assert!(
            p.text
                .contains("Signed in as Alice Example <alice@example.com>"),
            "{p:#?}"
        );
        assert_eq!(p.url, format!("{base}/me"));
        assert!(p.text.contains("tokens kept server-side"), "{p:#?}");
        let id = p.id.clone().expect("signed in: a session cookie");

        let p = tab.click("#home").await;
        assert!(p.text.contains("Signed in as Alice Example"), "{p:#?}");
        assert_eq!(p.id.as_ref(), Some(&id));

        let p = expect_page!(tab.click("#sign-out").await, shows "Not signed in.");
        assert_eq!(p.url, format!("{base}/"));
        assert_eq!(p.id, None, "sign-out expired the cookie");

        // The 401 page offers the way back in.
        let p = expect_page!(tab.click("#me").await, shows "Not signed in.");
        assert_eq!(p.url, format!("{base}/me"));
        let p = tab.click("#start").await;
        assert!(p.text.contains("Signed in as Alice Example"), "{p:#?}");
        assert_ne!(p.id, Some(id), "a new sign-in, a new id");
        eprintln!("sign-in example on {host}: {:?}", started.elapsed());
    }
}
