//! MemoryStore benches: per-operation cost, and the longest pause any
//! operation sees while a million expired sessions are being reclaimed.
//!
//! Run: `cargo bench --bench memory_store`. The pause figures are printed
//! before criterion's groups (they are maxima, which criterion does not
//! report).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, Criterion};
use tower_session_storage::store::{ChangeSet, Items, Record};
use tower_session_storage::{MemoryStore, SessionId, SessionStore};

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn record(ttl: Duration) -> Record {
    let now = unix_ms();
    Record {
        items: Arc::new(
            [
                ("user_id", "12345"),
                ("csrf", "0123456789abcdef0123456789abcdef"),
            ]
            .into_iter()
            .collect::<Items>(),
        ),
        created_at: now,
        expires_at: now + ttl.as_millis() as u64,
    }
}

struct Pauses(Vec<Duration>);

impl Pauses {
    fn report(&mut self, what: &str) {
        self.0.sort();
        let n = self.0.len();
        let at = |q: f64| self.0[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "{what}: {n} ops, median {:?}, p99.9 {:?}, max {:?}",
            at(0.5),
            at(0.999),
            self.0[n - 1]
        );
    }
}

/// 1M sessions expire together while 10k live ones keep being used: every
/// operation's latency, including the reclamation it does on the side.
fn reclamation_pause(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        const EXPIRING: usize = 1_000_000;
        let store = MemoryStore::new().with_max_sessions(EXPIRING + 20_000);
        for _ in 0..EXPIRING {
            store
                .create(&new_id(), &record(Duration::from_secs(2)))
                .await
                .unwrap();
        }
        let live: Vec<SessionId> = (0..10_000).map(|_| new_id()).collect();
        for id in &live {
            store
                .create(id, &record(Duration::from_secs(3600)))
                .await
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(3_100));
        let before = store.len();
        let mut pauses = Pauses(Vec::with_capacity(400_000));
        let mut changes = ChangeSet::new();
        changes.set("seen", "1");
        for round in 0..20 {
            for (i, id) in live.iter().enumerate() {
                let t = Instant::now();
                if i % 2 == 0 {
                    black_box(store.load(id).await.unwrap());
                } else {
                    black_box(
                        store
                            .save(id, &changes, unix_ms() + 3_600_000)
                            .await
                            .unwrap(),
                    );
                }
                pauses.0.push(t.elapsed());
            }
            if round % 4 == 0 {
                let t = Instant::now();
                store
                    .create(&new_id(), &record(Duration::from_secs(3600)))
                    .await
                    .unwrap();
                pauses.0.push(t.elapsed());
            }
        }
        println!(
            "reclamation with 1M expired + 10k live sessions: {} -> {} sessions held",
            before,
            store.len()
        );
        pauses.report("  load/save/create while reclaiming");
    });

    // A store full of expired sessions: each create reclaims room first.
    rt.block_on(async {
        const FULL: usize = 1_000_000;
        let store = MemoryStore::new().with_max_sessions(FULL);
        for _ in 0..FULL {
            store
                .create(&new_id(), &record(Duration::from_secs(2)))
                .await
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(3_100));
        let mut pauses = Pauses(Vec::new());
        for _ in 0..20_000 {
            let t = Instant::now();
            store
                .create(&new_id(), &record(Duration::from_secs(3600)))
                .await
                .unwrap();
            pauses.0.push(t.elapsed());
        }
        pauses.report("create into a full store of 1M expired sessions");
    });
}

fn ops(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let ids: Vec<SessionId> = (0..100_000).map(|_| new_id()).collect();
    rt.block_on(async {
        for id in &ids {
            store
                .create(id, &record(Duration::from_secs(3600)))
                .await
                .unwrap();
        }
    });
    let mut changes = ChangeSet::new();
    changes.set("seen", "1");
    let mut g = c.benchmark_group("memory_store");
    let mut i = 0usize;
    g.bench_function("load", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(rt.block_on(store.load(&ids[i])).unwrap())
        })
    });
    g.bench_function("save_one_key", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(
                rt.block_on(store.save(&ids[i], &changes, unix_ms() + 3_600_000))
                    .unwrap(),
            )
        })
    });
    g.bench_function("create_then_delete", |b| {
        let r = record(Duration::from_secs(3600));
        b.iter(|| {
            let id = new_id();
            black_box(rt.block_on(store.create(&id, &r)).unwrap());
            rt.block_on(store.delete(&id)).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, ops);

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // `cargo bench -- <filter>` passes a filter; skip the long pause run
    // unless it is asked for or no filter is given.
    let args: Vec<String> = std::env::args().collect();
    let filtered = args.iter().skip(1).any(|a| !a.starts_with('-'));
    if !filtered || args.iter().any(|a| a == "pause") {
        reclamation_pause(&rt);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
