//! Drives `examples/signin.rs` (a web app on `127.0.0.1` and a stand-in
//! OpenID provider on `localhost`, both on loopback) with reqwest and a
//! cookie jar: the whole sign-in with PKCE and the provider's consent page,
//! the tokens kept server-side, `state` checks, the pre-sign-in id dying at
//! the callback, sign-out, and back-channel logout (a logout token by `sid`
//! or `sub` ends the matching sessions; every invalid one is refused and
//! ends nothing).
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../examples/signin.rs"]
mod signin_example;

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Client, StatusCode, Url};
use tokio::net::TcpListener;
use tower_session_storage::store::Timestamp;
use tower_session_storage::{MemoryStore, SameSite, SessionId, SessionStore};

use signin_example::{provider, sdk};

/// The two servers, and the app's session store.
struct Env {
    app: Url,
    provider: Url,
    store: MemoryStore,
    signer: provider::Signer,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(SameSite::Lax).await
    }

    async fn start_with(same_site: SameSite) -> Self {
        let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let store = MemoryStore::new();
        let demo = signin_example::start(app, provider, store.clone(), same_site)
            .await
            .unwrap();
        Self {
            app: Url::parse(&demo.app).unwrap(),
            provider: Url::parse(&demo.provider).unwrap(),
            store,
            signer: demo.signer,
        }
    }

    fn url(&self, path: &str) -> Url {
        self.app.join(path).unwrap()
    }

    /// The items the store holds for `id`.
    async fn stored(&self, id: &str) -> Option<Vec<(String, String)>> {
        let id: SessionId = id.parse().unwrap();
        let record = self.store.load(&id, Timestamp::now()).await.unwrap()?;
        Some(
            record
                .items
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

/// One browser: a cookie jar shared by a client that follows redirects and
/// one that stops at each, to look at the steps.
struct Browser {
    jar: Arc<Jar>,
    follow: Client,
    step: Client,
}

impl Browser {
    fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let follow = Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        let step = Client::builder()
            .cookie_provider(jar.clone())
            .redirect(Policy::none())
            .build()
            .unwrap();
        Self { jar, follow, step }
    }

    /// The session id the jar holds for the app.
    fn session_id(&self, env: &Env) -> Option<String> {
        let header = self.jar.cookies(&env.app)?;
        header
            .to_str()
            .unwrap()
            .split("; ")
            .find_map(|pair| pair.strip_prefix("id="))
            .map(str::to_owned)
    }

    /// `/sign-in`, then the provider's consent page and its button (as
    /// Alice): returns the callback URL (with `code` and `state`) the
    /// provider sends the browser to, without following it.
    async fn start_sign_in(&self, env: &Env) -> Url {
        self.start_sign_in_as(env, "alice").await
    }

    async fn start_sign_in_as(&self, env: &Env, account: &str) -> Url {
        let authorize = self.authorize_url(&env.app).await;
        assert_eq!(authorize.origin(), env.provider.origin());
        let res = self.consent(&authorize, account).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let callback = Url::parse(location(&res)).unwrap();
        assert_eq!(
            callback.as_str().split('?').next(),
            Some(env.url("/callback").as_str())
        );
        callback
    }

    /// `/sign-in` on `app`: the provider URL it sends the browser to, whose
    /// consent page is shown (nothing issued yet).
    async fn authorize_url(&self, app: &Url) -> Url {
        let res = self
            .step
            .get(app.join("/sign-in").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let authorize = Url::parse(location(&res)).unwrap();
        assert_eq!(authorize.host_str(), Some("localhost"));
        assert_eq!(authorize.path(), "/authorize");
        let res = self.step.get(authorize.clone()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "the consent page");
        let page = res.text().await.unwrap();
        assert!(
            page.contains("<button id=\"consent\" type=\"submit\">"),
            "{page}"
        );
        authorize
    }

    /// The consent button: `POST` to the authorize URL with the account.
    async fn consent(&self, authorize: &Url, account: &str) -> reqwest::Response {
        self.step
            .post(authorize.clone())
            .form(&[("account", account)])
            .send()
            .await
            .unwrap()
    }

    /// The whole sign-in as Alice, following every redirect; returns
    /// `/me`'s text.
    async fn sign_in(&self, env: &Env) -> String {
        self.sign_in_as(env, "alice").await
    }

    async fn sign_in_as(&self, env: &Env, account: &str) -> String {
        let res = self.follow.get(env.url("/sign-in")).send().await.unwrap();
        assert_eq!(res.url().path(), "/authorize", "the consent page");
        let authorize = res.url().clone();
        let res = self
            .follow
            .post(authorize)
            .form(&[("account", account)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.url().path(), "/me");
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap()
    }

    async fn me(&self, env: &Env) -> (StatusCode, String) {
        let res = self.follow.get(env.url("/me")).send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    }
}

fn location(res: &reqwest::Response) -> &str {
    res.headers()[LOCATION].to_str().unwrap()
}

fn query(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

fn with_query(url: &Url, name: &str, value: &str) -> Url {
    let mut out = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

/// `/me` as a client that sends only `id=<id>`, by hand.
async fn me_with_id(env: &Env, id: &str) -> StatusCode {
    Client::new()
        .get(env.url("/me"))
        .header(COOKIE, format!("id={id}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn full_sign_in_shows_the_user() {
    let env = Env::start().await;
    let browser = Browser::new();
    assert_eq!(browser.me(&env).await.0, StatusCode::UNAUTHORIZED);

    let me = browser.sign_in(&env).await;
    assert!(
        me.contains("Signed in as Alice Example &lt;alice@example.com&gt;"),
        "{me}"
    );
    let (status, again) = browser.me(&env).await;
    assert_eq!(status, StatusCode::OK);
    assert!(again.contains("Alice Example"));
    let home = browser
        .follow
        .get(env.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("Signed in as Alice Example"), "{home}");
    assert_eq!(env.store.len(), 1);
}

#[tokio::test]
async fn over_6_kb_of_tokens_live_server_side_and_the_cookie_holds_only_the_id() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let res = browser.step.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/me");

    // The cookie: exactly one Set-Cookie, whose value is the 36-character id.
    let set_cookies: Vec<_> = res.headers().get_all(SET_COOKIE).iter().collect();
    assert_eq!(set_cookies.len(), 1, "{set_cookies:?}");
    let set_cookie = set_cookies[0].to_str().unwrap();
    let id = set_cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("id=")
        .unwrap();
    assert_eq!(id.len(), 36, "{set_cookie}");
    assert!(id.parse::<SessionId>().is_ok());
    assert!(set_cookie.len() < 100, "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"));

    // The tokens: in the store, over 6 KB, and the sign-in state gone.
    let items = env.stored(id).await.expect("the session is stored");
    let keys: Vec<_> = items.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [sdk::ACCESS_TOKENS, sdk::ID_TOKEN, sdk::REFRESH_TOKEN],
        "only the tokens: the one-use sign-in state was removed"
    );
    let bytes: usize = items.iter().map(|(k, v)| k.len() + v.len()).sum();
    assert!(bytes > 6 * 1024, "{bytes} bytes of tokens");

    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &items
            .iter()
            .find(|(k, _)| k == sdk::ACCESS_TOKENS)
            .unwrap()
            .1,
    )
    .unwrap();
    for resource in signin_example::RESOURCES
        .iter()
        .chain([&sdk::DEFAULT_RESOURCE])
    {
        assert!(
            map[*resource]["token"].as_str().unwrap().len() > 500,
            "{resource}"
        );
    }
    let id_token = &items.iter().find(|(k, _)| k == sdk::ID_TOKEN).unwrap().1;
    let claims = sdk::decode_claims(id_token).unwrap();
    assert_eq!(claims.aud, signin_example::CLIENT_ID);
    assert_eq!(claims.name, "Alice Example");

    let (status, me) = browser.me(&env).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me.contains("tokens kept server-side"), "{me}");
}

#[tokio::test]
async fn the_pre_sign_in_id_is_dead_after_the_callback() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let pre = browser.session_id(&env).expect("/sign-in made a session");
    let items = env.stored(&pre).await.unwrap();
    assert!(
        items.iter().any(|(k, _)| k == sdk::CODE_VERIFIER),
        "the verifier waits server-side"
    );

    let res = browser.follow.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let post = browser.session_id(&env).unwrap();
    assert_ne!(post, pre, "cycle_id gave the session a new id");

    assert_eq!(me_with_id(&env, &post).await, StatusCode::OK);
    assert_eq!(
        me_with_id(&env, &pre).await,
        StatusCode::UNAUTHORIZED,
        "the old id opens nothing"
    );
    assert!(env.stored(&pre).await.is_none());
    assert_eq!(env.store.len(), 1);
}

#[tokio::test]
async fn a_forged_state_is_refused_and_ends_the_attempt() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let forged = with_query(&callback, "state", "attacker-chosen-state");
    assert_eq!(query(&forged, "code"), query(&callback, "code"));

    let res = browser.follow.get(forged).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("state"));
    assert_eq!(browser.me(&env).await.0, StatusCode::UNAUTHORIZED);

    // The state was for one callback only: the genuine one now fails too,
    // and the session no longer holds any sign-in state.
    let res = browser.follow.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(browser.me(&env).await.0, StatusCode::UNAUTHORIZED);
    assert!(env.store.is_empty(), "the emptied session was deleted");
}

#[tokio::test]
async fn a_missing_state_or_a_callback_without_sign_in_is_refused() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let mut no_state = env.url("/callback");
    no_state
        .query_pairs_mut()
        .append_pair("code", &query(&callback, "code"));
    let res = browser.follow.get(no_state).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // Another browser (no session) with a valid-looking callback.
    let stranger = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let res = stranger.follow.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stranger.session_id(&env), None, "no session made for it");
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    let pre = browser.session_id(&env).unwrap();
    let res = browser.follow.get(callback.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // The same code and state again, with the signed-in session or with the
    // pre-sign-in id by hand: the app refuses it itself (the sign-in state
    // was used up), before the provider would refuse the spent code.
    let replays = [
        browser.follow.get(callback.clone()),
        Client::new()
            .get(callback)
            .header(COOKIE, format!("id={pre}")),
    ];
    for replay in replays {
        let res = replay.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let text = res.text().await.unwrap();
        assert!(text.contains("no sign-in in progress"), "{text}");
    }
    // The replays changed nothing for the real user.
    assert_eq!(browser.me(&env).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_provider_checks_the_pkce_verifier() {
    let env = Env::start().await;
    let browser = Browser::new();
    let callback = browser.start_sign_in(&env).await;
    // Someone who saw the code but not the verifier cannot redeem it.
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("client_id", signin_example::CLIENT_ID)
        .append_pair("code", &query(&callback, "code"))
        .append_pair("redirect_uri", env.url("/callback").as_str())
        .append_pair(
            "code_verifier",
            "a-guessed-verifier-a-guessed-verifier-a-gue",
        )
        .finish();
    let res = Client::new()
        .post(env.provider.join("/token").unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("code_verifier"));
}

#[tokio::test]
async fn sign_out_blanks_the_tokens_and_kills_the_id() {
    let env = Env::start().await;
    let browser = Browser::new();
    browser.sign_in(&env).await;
    let id = browser.session_id(&env).unwrap();
    assert!(env.stored(&id).await.is_some());

    let res = browser
        .step
        .post(env.url("/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let expired = res.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        expired.starts_with("id=;") && expired.contains("Max-Age=0"),
        "{expired}"
    );
    let home = browser
        .follow
        .get(env.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("Not signed in"), "{home}");
    assert_eq!(browser.me(&env).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(me_with_id(&env, &id).await, StatusCode::UNAUTHORIZED);
    assert!(env.stored(&id).await.is_none());
    assert!(env.store.is_empty());
}

#[test]
fn sdk_sign_out_blanks_every_key_through_the_storage_contract() {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use tower_session_storage::{SessionError, Storage};

    /// A `Storage` that is not this crate's: the SDK code needs nothing else.
    #[derive(Default)]
    struct MapStorage(RefCell<HashMap<String, String>>);
    impl Storage for MapStorage {
        fn get_item(&self, key: &str) -> Option<String> {
            self.0.borrow().get(key).cloned()
        }
        fn set_item(&self, key: &str, value: &str) -> Result<(), SessionError> {
            if value.is_empty() {
                self.0.borrow_mut().remove(key);
            } else {
                self.0.borrow_mut().insert(key.into(), value.into());
            }
            Ok(())
        }
        fn remove_item(&self, key: &str) -> Option<String> {
            self.0.borrow_mut().remove(key)
        }
    }

    let storage = MapStorage::default();
    for key in sdk::ALL_KEYS {
        storage.set_item(key, "x").unwrap();
    }
    sdk::sign_out(&storage).unwrap();
    assert!(storage.0.borrow().is_empty());
}

/// A browser that opened the app as `localhost`: `env`'s URL with that host.
fn on_localhost(url: &Url) -> Url {
    let mut url = url.clone();
    url.set_host(Some("localhost")).unwrap();
    url
}

#[tokio::test]
async fn sign_in_stays_on_localhost_when_opened_as_localhost() {
    let env = Env::start().await;
    let app = on_localhost(&env.app);
    let browser = Browser::new();

    // Step by step: the provider sends the browser back to the host it
    // started on, so the callback carries the session cookie.
    let authorize = browser.authorize_url(&app).await;
    assert_eq!(
        query(&authorize, "redirect_uri"),
        app.join("/callback").unwrap().as_str()
    );
    let res = browser.consent(&authorize, "alice").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let callback = Url::parse(location(&res)).unwrap();
    assert_eq!(callback.host_str(), Some("localhost"));
    let res = browser.follow.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "not a 400 'already used'");
    assert_eq!(res.url().host_str(), Some("localhost"));
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("Signed in as Alice Example"));

    // The session lives under localhost only: 127.0.0.1 is another host.
    assert!(browser.jar.cookies(&app).is_some());
    assert_eq!(browser.session_id(&env), None);
}

#[tokio::test]
async fn an_unknown_host_is_sent_to_the_default_one_before_sign_in() {
    let env = Env::start().await;
    let res = Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
        .get(env.url("/sign-in"))
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), env.url("/sign-in").as_str());
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "no session started"
    );
    assert!(env.store.is_empty());
}

#[tokio::test]
async fn every_page_is_html_with_the_way_on() {
    let env = Env::start().await;
    let browser = Browser::new();
    let page = |res: reqwest::Response| async move {
        let status = res.status();
        let html = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.to_str().unwrap().starts_with("text/html"));
        let body = res.text().await.unwrap();
        assert!(html, "{status}: {body}");
        for way_on in [
            "href=\"/\"",
            "href=\"/sign-in\"",
            "href=\"/me\"",
            "<form method=\"post\" action=\"/sign-out\">",
        ] {
            assert!(body.contains(way_on), "{status} lacks {way_on}: {body}");
        }
        (status, body)
    };

    // Not signed in: /me is a 401 that offers the sign-in.
    let (status, body) = page(browser.follow.get(env.url("/me")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Not signed in"), "{body}");
    // A callback without a sign-in: a 400 with a way to start again.
    let (status, body) = page(
        browser
            .follow
            .get(env.url("/callback?code=x&state=y"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("no sign-in in progress"), "{body}");
    // A typed /sign-out only shows the button.
    let (status, _) = page(
        browser
            .follow
            .get(env.url("/sign-out"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = page(browser.follow.get(env.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Signed in: the landing page and home say who, with the way on.
    let body = browser.sign_in(&env).await;
    assert!(body.contains("Signed in as Alice Example"), "{body}");
    assert!(body.contains("<form method=\"post\" action=\"/sign-out\">"));
    let (_, body) = page(browser.follow.get(env.url("/")).send().await.unwrap()).await;
    assert!(body.contains("Signed in as Alice Example"), "{body}");

    // GET /sign-out does not sign out; the POST (the button) does.
    page(
        browser
            .follow
            .get(env.url("/sign-out"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(browser.me(&env).await.0, StatusCode::OK);
    let res = browser
        .follow
        .post(env.url("/sign-out"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.url().path(), "/");
    let (_, body) = page(res).await;
    assert!(body.contains("Not signed in"), "{body}");
    assert!(env.store.is_empty());
}

// ------------------------------------------------- back-channel logout

/// The sessions the store links as `name = value`.
async fn linked(env: &Env, name: &str, value: &str) -> usize {
    env.store
        .list(name, value, Timestamp::now(), 100)
        .await
        .unwrap()
        .len()
}

/// The `sid` `/me` shows for this browser's session.
async fn sid_of(browser: &Browser, env: &Env) -> String {
    let (status, me) = browser.me(env).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let from = me.find("<span id=\"sid\">").unwrap() + "<span id=\"sid\">".len();
    let len = me[from..].find("</span>").unwrap();
    let sid = me[from..from + len].to_owned();
    assert_eq!(sid.len(), 64, "{me}");
    sid
}

async fn signed_in(browser: &Browser, env: &Env) -> bool {
    browser.me(env).await.0 == StatusCode::OK
}

/// Three browsers: two signed in as Alice (two provider logins, two
/// sids), one as Bob.
async fn three_browsers(env: &Env) -> [(Browser, String); 3] {
    let make = |account: &'static str| async move {
        let b = Browser::new();
        b.sign_in_as(env, account).await;
        let sid = sid_of(&b, env).await;
        (b, sid)
    };
    let a1 = make("alice").await;
    let a2 = make("alice").await;
    let bob = make("bob").await;
    assert_ne!(a1.1, a2.1, "two provider logins, two sids");
    [a1, a2, bob]
}

const ALICE: &str = "user_7f3c9a2e41d8";
const BOB: &str = "user_2d4b8e61a0c7";

#[tokio::test]
async fn the_session_is_linked_to_the_user_and_the_provider_login() {
    let env = Env::start().await;
    let [(a1, sid1), (_a2, sid2), (_bob, sid3)] = three_browsers(&env).await;
    assert_eq!(linked(&env, "user", ALICE).await, 2);
    assert_eq!(linked(&env, "user", BOB).await, 1);
    for sid in [&sid1, &sid2, &sid3] {
        assert_eq!(linked(&env, "sid", sid).await, 1);
    }
    // The same browser signing in again reuses its provider login.
    let res = a1.step.post(env.url("/sign-out")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    a1.sign_in(&env).await;
    assert_eq!(sid_of(&a1, &env).await, sid1);
    // The provider lists its three logins, each with its sign-out button.
    let page = Client::new()
        .get(env.provider.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for sid in [&sid1, &sid2, &sid3] {
        assert!(page.contains(&format!("data-sid=\"{sid}\"")), "{page}");
    }
    assert_eq!(page.matches("class=\"provider-sign-out\"").count(), 3);
}

/// `POST /logout` at the provider with `name=value`: its page's result.
async fn provider_logout(env: &Env, name: &str, value: &str) -> (StatusCode, String) {
    let res = Client::new()
        .post(env.provider.join("/logout").unwrap())
        .form(&[(name, value)])
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn provider_sign_out_by_sid_ends_only_that_logins_sessions() {
    let env = Env::start().await;
    let [(a1, sid1), (a2, _), (bob, _)] = three_browsers(&env).await;
    let (status, page) = provider_logout(&env, "sid", &sid1).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("the app answered 200 OK: ended 1 sessions"),
        "{page}"
    );

    assert!(
        !signed_in(&a1, &env).await,
        "that provider login's session ended"
    );
    assert!(
        signed_in(&a2, &env).await,
        "Alice's other login is untouched"
    );
    assert!(signed_in(&bob, &env).await);
    assert_eq!(linked(&env, "user", ALICE).await, 1);
    // The login is gone at the provider too.
    let (status, _) = provider_logout(&env, "sid", &sid1).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn provider_sign_out_by_sub_ends_all_the_users_sessions() {
    let env = Env::start().await;
    let [(a1, _), (a2, _), (bob, _)] = three_browsers(&env).await;
    let (status, page) = provider_logout(&env, "sub", ALICE).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("ended 2 sessions"), "{page}");
    assert!(!signed_in(&a1, &env).await);
    assert!(!signed_in(&a2, &env).await);
    assert!(signed_in(&bob, &env).await, "only Alice's sessions");
    assert_eq!(linked(&env, "user", ALICE).await, 0);
}

/// Posts `body` with `content_type` to the app's back-channel endpoint:
/// the status, the body, and whether it said `Cache-Control: no-store`.
async fn post_backchannel(
    env: &Env,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let mut req = Client::new()
        .post(env.url(signin_example::BACKCHANNEL_PATH))
        .body(body);
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let res = req.send().await.unwrap();
    assert_eq!(
        res.headers()
            .get(reqwest::header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    (res.status(), res.text().await.unwrap())
}

fn form(token: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish()
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

#[tokio::test]
async fn a_valid_logout_token_by_sid_or_by_sub_ends_the_matching_sessions() {
    let env = Env::start().await;
    let [(a1, sid1), (a2, _), (bob, bob_sid)] = three_browsers(&env).await;
    let issuer = env.provider.as_str().trim_end_matches('/');
    // A sid with a sub: only that user's sessions of that login. Bob's
    // login named with Alice's sub ends nothing.
    let crossed = provider::logout_claims(
        issuer,
        signin_example::CLIENT_ID,
        Some(ALICE),
        Some(&bob_sid),
    );
    let token = env.signer.sign("logout+jwt", &crossed).unwrap();
    let (status, body) = post_backchannel(&env, FORM, form(&token)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ended 0 sessions\n")
    );
    assert!(signed_in(&bob, &env).await);

    let by_sid = provider::logout_claims(issuer, signin_example::CLIENT_ID, None, Some(&sid1));
    let token = env.signer.sign("logout+jwt", &by_sid).unwrap();
    let (status, body) = post_backchannel(&env, FORM, form(&token)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ended 1 sessions\n")
    );
    assert!(!signed_in(&a1, &env).await);
    assert!(signed_in(&a2, &env).await && signed_in(&bob, &env).await);
    // Replayed: refused (each token once, by its jti), and Alice's other
    // login is untouched.
    let (status, body) = post_backchannel(&env, FORM, form(&token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("already used"), "{body}");
    assert!(signed_in(&a2, &env).await);

    // Only a sub: every session of that user. A charset parameter is fine.
    let by_sub = provider::logout_claims(issuer, signin_example::CLIENT_ID, Some(ALICE), None);
    let token = env.signer.sign("logout+jwt", &by_sub).unwrap();
    let (status, body) = post_backchannel(
        &env,
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        form(&token),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ended 1 sessions\n")
    );
    assert!(!signed_in(&a2, &env).await);
    assert!(signed_in(&bob, &env).await);
}

#[tokio::test]
async fn every_invalid_logout_token_is_refused_and_ends_nothing() {
    let env = Env::start().await;
    let [(a1, sid1), (a2, _), (bob, _)] = three_browsers(&env).await;
    let issuer = env.provider.as_str().trim_end_matches('/').to_owned();
    let now = signin_example::now_secs();
    let valid =
        provider::logout_claims(&issuer, signin_example::CLIENT_ID, Some(ALICE), Some(&sid1));
    let sign = |claims: &serde_json::Value| env.signer.sign("logout+jwt", claims).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut claims = valid.clone();
        edit(claims.as_object_mut().unwrap());
        sign(&claims)
    };
    let good = sign(&valid);
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let mut flipped = signature.as_bytes().to_vec();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let other_key = provider::Signer::generate().unwrap();
    let unsigned = format!(
        "{}.{payload}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"logout+jwt"}"#
        )
    );

    let tokens: Vec<(&str, String)> = vec![
        ("bad signature", format!("{header}.{payload}.{flipped}")),
        ("no signature", format!("{header}.{payload}.")),
        ("alg none", unsigned),
        ("wrong key", other_key.sign("logout+jwt", &valid).unwrap()),
        (
            "wrong iss",
            with(&|c| drop(c.insert("iss".into(), "http://evil.example".into()))),
        ),
        ("no iss", with(&|c| drop(c.remove("iss")))),
        (
            "wrong aud",
            with(&|c| drop(c.insert("aud".into(), "another-app".into()))),
        ),
        ("no aud", with(&|c| drop(c.remove("aud")))),
        (
            "iat in the future",
            with(&|c| drop(c.insert("iat".into(), (now + 3600).into()))),
        ),
        (
            "iat too old",
            with(&|c| drop(c.insert("iat".into(), (now - 3600).into()))),
        ),
        ("no iat", with(&|c| drop(c.remove("iat")))),
        ("no jti", with(&|c| drop(c.remove("jti")))),
        (
            "jti empty",
            with(&|c| drop(c.insert("jti".into(), "".into()))),
        ),
        (
            "iat not a number",
            with(&|c| drop(c.insert("iat".into(), "yesterday".into()))),
        ),
        (
            "expired",
            with(&|c| drop(c.insert("exp".into(), (now - 3600).into()))),
        ),
        ("missing events", with(&|c| drop(c.remove("events")))),
        (
            "events with the wrong key",
            with(&|c| {
                drop(c.insert(
                    "events".into(),
                    serde_json::json!({"http://schemas.openid.net/event/other": {}}),
                ))
            }),
        ),
        (
            "events value not an object",
            with(&|c| {
                drop(c.insert("events".into(), serde_json::json!({"http://schemas.openid.net/event/backchannel-logout": "yes"})))
            }),
        ),
        (
            "events not an object",
            with(&|c| drop(c.insert("events".into(), "logout".into()))),
        ),
        (
            "nonce present",
            with(&|c| drop(c.insert("nonce".into(), "n-0S6_WzA2Mj".into()))),
        ),
        (
            "nonce null",
            with(&|c| drop(c.insert("nonce".into(), serde_json::Value::Null))),
        ),
        (
            "neither sub nor sid",
            with(&|c| {
                c.remove("sub");
                c.remove("sid");
            }),
        ),
        (
            "sid not a string",
            with(&|c| drop(c.insert("sid".into(), 42.into()))),
        ),
        (
            "empty sid and no sub",
            with(&|c| {
                c.remove("sub");
                c.insert("sid".into(), "".into());
            }),
        ),
        ("garbage", "not a jwt".to_owned()),
        ("three garbage parts", "a.b.c".to_owned()),
        ("empty", String::new()),
        (
            "payload not JSON",
            format!("{header}.bm90IGpzb24.{signature}"),
        ),
    ];
    for (case, token) in &tokens {
        let (status, body) = post_backchannel(&env, FORM, form(token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert!(body.contains("invalid_request"), "{case}: {body}");
        // Each refused for its own reason, not another defect of the case.
        let why = match *case {
            "bad signature" | "no signature" | "wrong key" | "payload not JSON" => {
                "InvalidSignature"
            }
            "alg none" => "unknown variant `none`",
            "wrong iss" => "InvalidIssuer",
            "no iss" => "Missing required claim: iss",
            "wrong aud" => "InvalidAudience",
            "no aud" => "Missing required claim: aud",
            "iat in the future" => "iat is in the future",
            "iat too old" => "iat is too old",
            "no iat" | "iat not a number" => "no iat",
            "no jti" => "no jti",
            "jti empty" => "jti is not a non-empty string",
            "expired" => "ExpiredSignature",
            "nonce present" | "nonce null" => "nonce",
            "neither sub nor sid" => "neither sub nor sid",
            "sid not a string" | "empty sid and no sub" => "sid is not a non-empty string",
            "garbage" | "three garbage parts" => "not a valid token",
            "empty" => "no logout_token",
            events => {
                assert!(events.contains("events"), "{case}");
                "events claim lacks"
            }
        };
        assert!(body.contains(why), "{case}: {body}");
    }

    // The transport: a valid token, sent wrong.
    let valid_form = form(&good);
    let huge = format!("{valid_form}&padding={}", "x".repeat(1 << 20));
    let wrong: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "json",
            Some("application/json"),
            serde_json::to_vec(&serde_json::json!({"logout_token": good})).unwrap(),
        ),
        (
            "text/plain form",
            Some("text/plain"),
            valid_form.clone().into_bytes(),
        ),
        ("no content type", None, valid_form.clone().into_bytes()),
        ("huge body", FORM, huge.into_bytes()),
        ("no logout_token", FORM, b"token=abc".to_vec()),
        (
            "two logout_tokens",
            FORM,
            format!("{valid_form}&{valid_form}").into_bytes(),
        ),
        ("not UTF-8", FORM, b"logout_token=\xff\xfe\xfd".to_vec()),
        ("empty body", FORM, Vec::new()),
    ];
    for (case, content_type, body) in wrong {
        let (status, body) = post_backchannel(&env, content_type, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
    }

    // Nothing was ended by any of them; the valid token still works.
    assert!(signed_in(&a1, &env).await && signed_in(&a2, &env).await);
    assert!(signed_in(&bob, &env).await);
    assert_eq!(linked(&env, "user", ALICE).await, 2);
    let (status, body) = post_backchannel(&env, FORM, valid_form).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ended 1 sessions\n")
    );
    assert!(!signed_in(&a1, &env).await);
}

#[tokio::test]
async fn the_provider_asks_before_it_sends_the_browser_back() {
    let env = Env::start().await;
    assert_eq!(env.provider.host_str(), Some("localhost"));
    assert_eq!(env.app.host_str(), Some("127.0.0.1"));
    let browser = Browser::new();
    let authorize = browser.authorize_url(&env.app).await;
    // Declining goes back with an error, which the app refuses.
    let res = browser
        .step
        .post(authorize.clone())
        .form(&[("deny", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let back = Url::parse(location(&res)).unwrap();
    assert_eq!(query(&back, "error"), "access_denied");
    let res = browser.follow.get(back).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // An unknown account, or a tampered request, gets nothing.
    let res = browser.consent(&authorize, "mallory").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let tampered = with_query(&authorize, "redirect_uri", "http://evil.example/callback");
    let res = browser.consent(&tampered, "alice").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The provider publishes its key.
    let jwks = Client::new()
        .get(env.provider.join("/jwks").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
}

#[tokio::test]
async fn same_site_strict_is_a_setting_of_the_demo() {
    // A cookie jar does not apply SameSite (tests/browser.rs shows the
    // browser leaving a Strict cookie out of the cross-site callback); this
    // shows the knob reaches the cookie.
    for (same_site, attribute) in [
        (SameSite::Lax, "SameSite=Lax"),
        (SameSite::Strict, "SameSite=Strict"),
    ] {
        let env = Env::start_with(same_site).await;
        let res = Browser::new()
            .step
            .get(env.url("/sign-in"))
            .send()
            .await
            .unwrap();
        let cookie = res.headers()[SET_COOKIE].to_str().unwrap();
        assert!(cookie.contains(attribute), "{cookie}");
    }
    for (value, parsed) in [
        ("", Some(SameSite::Lax)),
        ("lax", Some(SameSite::Lax)),
        ("Strict", Some(SameSite::Strict)),
        ("none", None),
    ] {
        assert_eq!(
            signin_example::parse_same_site(value).ok(),
            parsed,
            "{value}"
        );
    }
}
