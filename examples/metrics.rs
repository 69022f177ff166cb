//! The axum demo (`examples/axum.rs`) with its sessions' metrics on
//! `/metrics`, in the Prometheus text format, through
//! `metrics-exporter-prometheus`. Needs the crate feature `metrics`.
//!
//! ```text
//! cargo run --example metrics --features metrics
//! RUST_LOG=tower_session_storage=debug cargo run --example metrics --features metrics  # + store spans
//! ```
//!
//! The server listens on `127.0.0.1`, on the port in `PORT` (default 3000;
//! if that port is busy, the OS picks one). Click through the demo, then
//! scrape:
//!
//! ```text
//! curl -b jar.txt -c jar.txt http://127.0.0.1:3000/
//! curl -b jar.txt -c jar.txt 'http://127.0.0.1:3000/sign-in?user=alice'
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! and see, among others:
//!
//! ```text
//! session_created_total 1
//! session_loads_total{outcome="found"} 1
//! session_cycled_total 1
//! session_memory_sessions 1
//! session_store_operation_duration_seconds_bucket{op="load",store="memory",le="0.0001"} 1
//! ```
//!
//! How it is wired, for your own app:
//!
//! 1. Install a recorder once at start-up, before the first request:
//!    here `PrometheusBuilder::install_recorder`, which hands back a handle
//!    that renders the text format. Any exporter of the `metrics`
//!    ecosystem works the same way (OpenTelemetry, StatsD, …).
//! 2. Call [`tower_session_storage::describe_metrics`] so that the scrape
//!    carries `# HELP` and unit lines.
//! 3. Serve the handle's `render()` on a route outside the session layer
//!    (a scrape should not load or create sessions), and run the
//!    exporter's upkeep now and then (it drains the histograms).
//!
//! The store spans (`DEBUG`, target `tower_session_storage::telemetry`)
//! need a `tracing` subscriber, which this example does not install; see
//! the README's "Operating it".

#[allow(dead_code)]
#[path = "axum.rs"]
mod demo;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Upper bounds of the store-latency buckets, in seconds: an in-process
/// store answers in microseconds, a network store in a fraction of a
/// millisecond to a few milliseconds, and a timeout in seconds.
const BUCKETS: &[f64] = &[
    0.000_025, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

#[tokio::main]
async fn main() -> ExitCode {
    let result = async {
        let listener = demo::bind().await?;
        let port = listener.local_addr()?.port();
        println!("session demo with metrics listening on http://127.0.0.1:{port}/");
        println!("  curl -b jar.txt -c jar.txt http://127.0.0.1:{port}/");
        println!("  curl http://127.0.0.1:{port}/metrics");
        serve(listener).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The Prometheus recorder, installed once for the process (the `metrics`
/// facade has one global recorder).
pub(crate) fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("session_store_operation_duration_seconds".into()),
                    BUCKETS,
                )
                .and_then(PrometheusBuilder::install_recorder)
                .unwrap_or_else(|e| panic!("installing the Prometheus recorder: {e}"));
            tower_session_storage::describe_metrics();
            handle
        })
        .clone()
}

/// Serves the demo and `/metrics` on `listener` until the process ends.
pub(crate) async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let handle = recorder();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    axum::serve(listener, app(handle)).await
}

/// The demo's routes (behind its session layer) and `/metrics` (outside
/// it: `Router::route` after `layer` is not wrapped).
pub(crate) fn app(handle: PrometheusHandle) -> Router {
    demo::app().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}
