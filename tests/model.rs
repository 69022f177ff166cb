//! Model-based concurrency check: random concurrent histories of requests on
//! a few shared sessions, through the real `SessionLayer`, against a store
//! that delays and fails calls at random, checked against a reference model
//! of the documented semantics (`tests/model_support/oracle.rs` lists the
//! rules).
//!
//! Runs against:
//!
//! - `MemoryStore`, and `MemoryStore` with `with_max_sessions(4)`, on a
//!   current-thread runtime with paused tokio time: delays are virtual, time
//!   steps past the idle and absolute timeouts cost nothing, and a seed
//!   replays the same interleaving;
//! - `MemoryStore` capped at 4 on a 2-worker runtime on real time, so
//!   requests run in parallel (creates racing for the last free place); not
//!   replayable, no time steps;
//! - a reference store (one `Mutex<HashMap>`), which must pass every
//!   history: it checks the checker;
//! - with the `redis` feature, `RedisStore` on a standalone server and on a
//!   3-node cluster (real processes on loopback; real time with a 1 s idle
//!   timeout, and a real sleep past it in about one history in ten; without
//!   `redis-server` a loud SKIP, under `CI=true` a failure).
//!
//! What a history is, how the store misbehaves, and the rules checked:
//! `tests/model_support/mod.rs`, `faulty.rs` and `oracle.rs`.
//!
//! Links and the registry are part of every history's mix: writes link
//! their session to a user, and three histories in four also run
//! `end_all` (from a handler through the request's `SessionRegistry`, with
//! and without keeping the tab's own session, and from outside requests
//! through `layer.registry()`) and `end` of an observed public id, with the
//! registry's store calls delayed and failed like the others (oracle rules
//! 7 to 12). A registry call that fails with no fault injected into it is a
//! failure on every store (rule 12): a store that cannot list or end linked
//! sessions fails here, loudly.
//!
//! Environment:
//!
//! - `MODEL_SEED=<n>`: run only the history of seed `n` (each test of this
//!   file runs it against its store; name the test to pick one). A failure
//!   prints its seed, the violations, the history, every store call in
//!   order, and the final probes.
//! - `MODEL_HISTORIES=<n>`: histories per store (default: a short run).
//! - `MODEL_SECONDS=<s>`: run histories for `s` seconds per store instead.
//! - `MODEL_BASE_SEED=<n>`: the base the histories' seeds derive from
//!   (default: from the clock, printed).
//! - `MODEL_KEEP_GOING=1`: do not stop at the first failing history; list
//!   every failing seed at the end.
//!
//! Figures (histories, requests, store calls, faults) are printed at the end
//! of each run: `cargo test --all-features --test model -- --nocapture`.
#![allow(clippy::unwrap_used)]

mod model_support;
#[cfg(feature = "postgres")]
mod postgres_support;
#[cfg(feature = "redis")]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use model_support::reference::RefStore;
use model_support::{history_seed, run_history, Cap, Figures, Setup};
use tower_session_storage::{MemoryStore, SessionStore};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// How many histories to run, and from which seeds.
struct Run {
    name: &'static str,
    base: u64,
    histories: u64,
    deadline: Option<Instant>,
    single: Option<u64>,
    keep_going: bool,
    started: Instant,
    figures: Figures,
    failures: Vec<(u64, String)>,
}

impl Run {
    fn new(name: &'static str, short_run: u64) -> Self {
        let base = env_u64("MODEL_BASE_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
        let seconds = env_u64("MODEL_SECONDS");
        Self {
            name,
            base,
            histories: env_u64("MODEL_HISTORIES").unwrap_or(if seconds.is_some() {
                u64::MAX
            } else {
                short_run
            }),
            deadline: seconds.map(|s| Instant::now() + Duration::from_secs(s)),
            single: env_u64("MODEL_SEED"),
            keep_going: std::env::var("MODEL_KEEP_GOING").is_ok_and(|v| v == "1"),
            started: Instant::now(),
            figures: Figures::default(),
            failures: Vec::new(),
        }
    }

    /// The next history's seed, or `None` when the run is over.
    fn next_seed(&self, i: u64) -> Option<u64> {
        if let Some(s) = self.single {
            return (i == 0).then_some(s);
        }
        if i >= self.histories || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        if !self.keep_going && !self.failures.is_empty() {
            return None;
        }
        Some(history_seed(self.base, i))
    }

    fn record(&mut self, seed: u64, figures: &Figures, verdict: Result<(), String>) {
        self.figures.add(figures);
        if let Err(report) = verdict {
            if self.keep_going {
                let first: Vec<&str> = report.lines().filter(|l| l.starts_with("  - ")).collect();
                eprintln!(
                    "[model {}] seed {seed} FAILED ({} requests): {}",
                    self.name,
                    figures.requests,
                    first.join(" | ")
                );
            }
            self.failures.push((seed, report));
        }
    }

    fn finish(self) {
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "[model {}] {secs:.1} s, base seed {}: {}",
            self.name, self.base, self.figures
        );
        if self.failures.is_empty() {
            return;
        }
        let seeds: Vec<u64> = self.failures.iter().map(|(s, _)| *s).collect();
        let (seed, report) = &self.failures[0];
        panic!(
            "{report}\n\nfailing seeds on {}: {seeds:?}\nreplay: MODEL_SEED={seed} cargo test \
             --all-features --test model -- --nocapture",
            self.name
        );
    }
}

/// `MemoryStore` on virtual time: a 10-minute idle timeout, a 12-minute
/// absolute one (a session used across two or three short time steps
/// reaches it), delays of a few ms, time steps past either.
fn memory_setup(name: &'static str) -> Setup {
    Setup {
        name,
        idle: Duration::from_secs(600),
        absolute: Duration::from_secs(720),
        paused: true,
        margin_ms: 5,
        max_delay: Duration::from_millis(3),
        short_step_per_mille: 400,
        long_step_per_mille: 70,
        stalls: true,
        immediate: true,
        in_process: true,
        max_slots: 3,
        max_tabs: 3,
        max_phases: 4,
        max_ops: 4,
    }
}

/// Runs histories on fresh current-thread runtimes with paused time, each
/// against a fresh store from `make`.
fn run_paused<S, F>(setup: Setup, short_run: u64, make: F)
where
    S: SessionStore + Clone,
    F: Fn() -> (S, Cap),
{
    let mut run = Run::new(setup.name, short_run);
    let mut i = 0;
    while let Some(seed) = run.next_seed(i) {
        i += 1;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let (figures, verdict) = rt.block_on(async {
            let (store, cap) = make();
            run_history(seed, store, &setup, cap).await
        });
        run.record(seed, &figures, verdict);
    }
    run.finish();
}

/// Every rule against `MemoryStore`, on the layer's boxed path and (a
/// quarter of the histories) its in-place path.
#[test]
fn model_memory_store() {
    run_paused(memory_setup("MemoryStore"), 5000, || {
        (MemoryStore::new(), None)
    });
}

/// The same with `with_max_sessions(4)`: creates past the cap answer 503
/// and persist nothing, and the store never holds more (rule 4).
#[test]
fn model_memory_store_capped() {
    run_paused(memory_setup("MemoryStore capped at 4"), 4000, || {
        let store = MemoryStore::new().with_max_sessions(4);
        let s = store.clone();
        let cap: Cap = Some((4, Arc::new(move || s.len())));
        (store, cap)
    });
}

/// The checker checked: the simplest correct store (one `Mutex<HashMap>`,
/// `end` following moves by public id) passes every history. A failure here
/// is an oracle mistake, not a store defect.
#[test]
fn model_reference_store() {
    run_paused(memory_setup("reference store"), 3000, || {
        (RefStore::default(), None)
    });
}

/// Runs histories one after another on the current (real-time) runtime.
async fn run_real<S, F, Fut>(setup: Setup, short_run: u64, mut make: F)
where
    S: SessionStore + Clone,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (S, Cap)>,
{
    let mut run = Run::new(setup.name, short_run);
    let mut i = 0;
    while let Some(seed) = run.next_seed(i) {
        i += 1;
        let (store, cap) = make().await;
        let (figures, verdict) = run_history(seed, store, &setup, cap).await;
        run.record(seed, &figures, verdict);
    }
    run.finish();
}

/// Settings on real time: a 1 s idle timeout (2.5 s absolute), delays up
/// to 1 ms, no stalls.
fn real_time_setup(name: &'static str) -> Setup {
    Setup {
        name,
        idle: Duration::from_millis(1000),
        absolute: Duration::from_millis(2500),
        paused: false,
        margin_ms: 50,
        max_delay: Duration::from_millis(1),
        short_step_per_mille: 0,
        long_step_per_mille: 0,
        stalls: false,
        immediate: false,
        in_process: false,
        max_slots: 3,
        max_tabs: 3,
        max_phases: 3,
        max_ops: 4,
    }
}

/// Real threads: `MemoryStore` capped at 4 on a 2-worker runtime, on real
/// time, so requests (and creates racing for the last free slot) run in
/// parallel. Not replayable (the OS schedules the threads); no time steps.
#[test]
fn model_memory_store_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let setup = Setup {
        immediate: true,
        in_process: true,
        max_slots: 6,
        ..real_time_setup("MemoryStore capped at 4, 2 threads")
    };
    rt.block_on(run_real(setup, 250, || {
        let store = MemoryStore::new().with_max_sessions(4);
        let s = store.clone();
        let cap: Cap = Some((4, Arc::new(move || s.len())));
        std::future::ready((store, cap))
    }));
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::redis_support::{self, unique_prefix};
    use tower_session_storage::RedisStore;

    /// `RedisStore` on real time (see [`real_time_setup`]), and now and then
    /// a real sleep past the idle timeout (about one history in ten: each
    /// costs 1.1 s).
    fn redis_setup(name: &'static str) -> Setup {
        Setup {
            long_step_per_mille: 40,
            ..real_time_setup(name)
        }
    }

    fn run_redis(setup: Setup, cluster: bool, short_run: u64) {
        let urls = if cluster {
            let Some(c) = redis_support::shared_cluster() else {
                return;
            };
            c.urls()
        } else {
            let Some(s) = redis_support::shared() else {
                return;
            };
            vec![s.url()]
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = if cluster {
                RedisStore::connect_cluster(&urls).await.unwrap()
            } else {
                RedisStore::connect(&urls[0]).await.unwrap()
            };
            run_real(setup, short_run, || {
                std::future::ready((store.clone().with_key_prefix(unique_prefix()), None))
            })
            .await;
        });
    }

    #[test]
    fn model_redis_standalone() {
        run_redis(redis_setup("RedisStore standalone"), false, 80);
    }

    #[test]
    fn model_redis_cluster() {
        run_redis(redis_setup("RedisStore cluster"), true, 80);
    }
}

/// `SqliteStore` on a file, on real time: a fresh table for each history.
#[cfg(feature = "sqlite")]
#[test]
fn model_sqlite_store() {
    use tower_session_storage::SqliteStore;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("tss-model-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("model.db").display());
    rt.block_on(async {
        let base = SqliteStore::connect(&url).await.unwrap();
        let mut n = 0;
        let setup = Setup {
            long_step_per_mille: 40,
            ..real_time_setup("SqliteStore (file)")
        };
        run_real(setup, 80, || {
            n += 1;
            let store = base.clone().with_table_name(&format!("model_{n}")).unwrap();
            async move {
                store.migrate().await.unwrap();
                (store, None)
            }
        })
        .await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// `PostgresStore` on a real PostgreSQL, on real time: a fresh table for
/// each history.
#[cfg(feature = "postgres")]
#[test]
fn model_postgres_store() {
    use tower_session_storage::PostgresStore;
    let Some(server) = postgres_support::shared() else {
        return; // said so loudly; a failure under CI=true
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = PostgresStore::connect(&server.url()).await.unwrap();
        let setup = Setup {
            long_step_per_mille: 40,
            ..real_time_setup("PostgresStore")
        };
        run_real(setup, 80, || {
            let store = base
                .clone()
                .with_table_name(&postgres_support::unique_table())
                .unwrap();
            async move {
                store.migrate().await.unwrap();
                (store, None)
            }
        })
        .await;
    });
}
