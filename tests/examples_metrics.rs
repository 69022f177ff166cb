//! Drives `examples/metrics.rs` over a real socket: click through the demo
//! with a cookie jar, then scrape `/metrics` as Prometheus would and find
//! the sessions' counters, the store histogram and the gauge, with their
//! help lines. One test: the example installs the process's one global
//! recorder, so the counts are this test's alone.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../examples/metrics.rs"]
mod metrics_example;

use std::sync::Arc;

use reqwest::cookie::Jar;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Client, StatusCode};
use tokio::net::TcpListener;

/// The value of the sample `series` (name and labels exactly as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn the_metrics_example_serves_the_session_metrics_to_prometheus() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(tokio::spawn(metrics_example::serve(listener)));

    let jar = Arc::new(Jar::default());
    let browser = Client::builder()
        .cookie_provider(jar.clone())
        .no_proxy()
        .build()
        .unwrap();
    for path in ["/", "/", "/sign-in?user=alice", "/me", "/sign-out"] {
        let res = browser.get(format!("{base}{path}")).send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }
    // An id the server never made: not found, never adopted.
    let bare = Client::builder().no_proxy().build().unwrap();
    bare.get(format!("{base}/"))
        .header(COOKIE, "id=0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1")
        .send()
        .await
        .unwrap();

    let res = bare.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get(SET_COOKIE).is_none(),
        "a scrape touches no session"
    );
    assert!(res.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();

    // Two sessions were made: the browser's, and the made-up id's request
    // (the counter page writes).
    assert_eq!(sample(&text, "session_created_total"), Some(2.0), "{text}");
    assert_eq!(
        sample(&text, "session_loads_total{outcome=\"found\"}"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "session_loads_total{outcome=\"not_found\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "session_cycled_total"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "session_saved_total"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "session_destroyed_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "session_memory_sessions"),
        Some(1.0),
        "{text}"
    );
    // The store latency, as a Prometheus histogram by operation and store.
    assert_eq!(
        sample(
            &text,
            "session_store_operation_duration_seconds_count{op=\"load\",store=\"memory\"}"
        ),
        Some(5.0),
        "{text}"
    );
    assert!(
        text.contains(
            "session_store_operation_duration_seconds_bucket{op=\"create\",store=\"memory\",le=\"+Inf\"} 2"
        ),
        "{text}"
    );
    // describe_metrics(): help lines for the operator.
    for name in [
        "session_created_total",
        "session_loads_total",
        "session_store_operation_duration_seconds",
        "session_memory_sessions",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no help for {name}: {text}"
        );
    }
    assert!(!text.contains("store_errors"), "nothing failed: {text}");
}
