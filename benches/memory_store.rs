//! MemoryStore benches: per-operation cost, and the longest pause any
//! operation sees while a million expired sessions are being reclaimed.
//!
//! Run: `cargo bench --bench memory_store`. The pause figures are printed
//! before criterion's groups (they are maxima, which criterion does not
//! report).
//!
//! The growth run (`cargo bench --bench memory_store -- growth`) creates
//! `MEMORY_STORE_GROWTH` sessions (default 1,000,000; the stalls it guards
//! against showed from 0.9M to 10M) into a store capped just above that,
//! on paused tokio time, and prints the longest single create at each
//! doubling of the size; then all but 10k of them expire at once, and it
//! prints the longest operation while they are reclaimed and the map gives
//! its capacity back, and the resident set at each step. Each time is
//! given twice: wall time, and "own" time, the wall time less the time the
//! thread waited for a CPU meanwhile (`/proc/thread-self/schedstat`): on a
//! loaded machine the scheduler alone makes millisecond pauses.
//!
//! The group `memory_store_contention` measures load + save on distinct
//! sessions with 1 and 2 threads, for `MemoryStore` and for a single
//! `Mutex<HashMap>` (the baseline, driven the same way). Time per op is wall
//! time over all threads' ops, so with 2 threads it halves when the store
//! scales perfectly; criterion's `thrpt` is ops/s. Only that group:
//! `cargo bench --bench memory_store -- contention`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Items, Keep, Listed, Meta, Record, Renewal, SaveOutcome, StoreFuture,
    Timestamp,
};
use tower_session_storage::{MemoryStore, PublicId, SessionId, SessionStore, StoreError};

fn new_id() -> SessionId {
    uuid::Uuid::new_v4().to_string().parse().unwrap()
}

fn unix_ms() -> Timestamp {
    Timestamp::now()
}

fn record(ttl: Duration) -> Record {
    let now = unix_ms();
    Record {
        items: [
            ("user_id", "12345"),
            ("csrf", "0123456789abcdef0123456789abcdef"),
        ]
        .into_iter()
        .collect::<Items>(),
        created_at: now,
        expires_at: now.saturating_add(ttl),
        meta: Meta::new(),
        public_id: tower_session_storage::PublicId::generate(),
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
        let mut worst = (Duration::ZERO, String::new());
        for round in 0..20 {
            for (i, id) in live.iter().enumerate() {
                let t = Instant::now();
                if i % 2 == 0 {
                    black_box(store.load(id, unix_ms()).await.unwrap());
                } else {
                    black_box(
                        store
                            .save(
                                id,
                                &changes,
                                Renewal::until(unix_ms().saturating_add(Duration::from_secs(3600))),
                            )
                            .await
                            .unwrap(),
                    );
                }
                let took = t.elapsed();
                if took > worst.0 {
                    worst = (
                        took,
                        format!(
                            "{} in round {round}, op {i}",
                            if i % 2 == 0 { "load" } else { "save" }
                        ),
                    );
                }
                pauses.0.push(took);
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
        println!("  slowest load/save: {:?}, {}", worst.0, worst.1);
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

/// The resident set in bytes (`/proc/self/statm`), 0 where there is none.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// Time this thread has spent runnable but waiting for a CPU (the second
/// field of `/proc/thread-self/schedstat`, in ns). Where the file is
/// missing, always 0 (wall time is then all there is).
struct RunDelay(Option<std::fs::File>);

impl RunDelay {
    fn open() -> Self {
        RunDelay(std::fs::File::open("/proc/thread-self/schedstat").ok())
    }

    fn ns(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let Some(f) = &self.0 else { return 0 };
        let mut buf = [0u8; 96];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

/// Runs `op`; returns its wall time, and its wall time less the time the
/// thread waited for a CPU meanwhile. (`MemoryStore` does its work when the
/// method is called, before the future is polled: both are timed.)
async fn timed<F: Future>(delay: &RunDelay, op: impl FnOnce() -> F) -> (Duration, Duration) {
    let d0 = delay.ns();
    let t = Instant::now();
    black_box(op().await);
    let wall = t.elapsed();
    let waited = Duration::from_nanos(delay.ns().saturating_sub(d0));
    (wall, wall.saturating_sub(waited))
}

/// The longest single operation while the store grows to `n` sessions, and
/// while it shrinks back after a mass expiry; see the module docs.
fn growth(n: usize) {
    const LIVE: usize = 10_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let rss_empty = rss();
        let store = MemoryStore::new().with_max_sessions(n + LIVE + 1_000);
        println!("growth to {n} sessions (MEMORY_STORE_GROWTH), then a mass expiry:");
        // Created first; they expire long after the others.
        let live: Vec<SessionId> = (0..LIVE).map(|_| new_id()).collect();
        for id in &live {
            store
                .create(id, &record(Duration::from_secs(100 * 3600)))
                .await
                .unwrap();
        }
        let r = record(Duration::from_secs(3600));
        let delay = RunDelay::open();
        let ms = Duration::from_millis(1);
        // Longest (wall, own) since the last line; over 1 ms (wall, own).
        let mut worst = (Duration::ZERO, Duration::ZERO);
        let mut over_1ms = (0usize, 0usize);
        let mut next = 125_000.min(n);
        let started = Instant::now();
        for i in 1..=n {
            let id = new_id();
            let (wall, own) = timed(&delay, || store.create(&id, &r)).await;
            worst = (worst.0.max(wall), worst.1.max(own));
            over_1ms.0 += usize::from(wall > ms);
            over_1ms.1 += usize::from(own > ms);
            if i == next || i == n {
                println!(
                    "  {i:>9} sessions: longest create since the last line {:?} wall, {:?} own; \
                     over 1 ms so far: {} wall, {} own; RSS {}",
                    worst.0,
                    worst.1,
                    over_1ms.0,
                    over_1ms.1,
                    mb(rss())
                );
                worst = (Duration::ZERO, Duration::ZERO);
                next = (next * 2).min(n);
            }
        }
        let per_create = started.elapsed() / n as u32;
        assert_eq!(store.len(), n + LIVE);
        let rss_peak = rss();
        println!(
            "  mean create {per_create:?} (with the timing); RSS {} empty, {} at the peak \
             ({:.0} bytes a session)",
            mb(rss_empty),
            mb(rss_peak),
            rss_peak.saturating_sub(rss_empty) as f64 / (n + LIVE) as f64
        );

        // Everything but the live ones expires at once.
        tokio::time::advance(Duration::from_secs(2 * 3600)).await;
        let mut changes = ChangeSet::new();
        changes.set("seen", "1");
        let mut wall_pauses = Pauses(Vec::with_capacity(n / 16));
        let mut own_pauses = Pauses(Vec::with_capacity(n / 16));
        // The slowest (own time): how long, which operation, sessions held.
        let mut worst = (Duration::ZERO, "", 0);
        let mut ops = 0usize;
        let started = Instant::now();
        // Until the expired ones are reclaimed, then as long again (at
        // least 40k operations) for the map to give its capacity back.
        let mut drained_at = None;
        loop {
            let id = &live[ops % LIVE];
            let exp = unix_ms().saturating_add(Duration::from_secs(3600));
            let ((wall, own), what) = match ops % 3 {
                0 => (
                    timed(&delay, || store.load(id, Timestamp::now())).await,
                    "load",
                ),
                1 => (
                    timed(&delay, || store.save(id, &changes, Renewal::until(exp))).await,
                    "save",
                ),
                _ => (
                    timed(&delay, || store.touch(id, Renewal::until(exp))).await,
                    "touch",
                ),
            };
            if own > worst.0 {
                worst = (own, what, store.len());
            }
            wall_pauses.0.push(wall);
            own_pauses.0.push(own);
            ops += 1;
            match drained_at {
                None if store.len() <= LIVE => drained_at = Some(ops),
                Some(d) if ops >= 2 * d.max(20_000) => break,
                _ => {}
            }
        }
        let rss_after = rss();
        println!(
            "  reclaimed {n} expired sessions in {} operations, ran {ops} ({:?}); {} left",
            drained_at.unwrap_or(ops),
            started.elapsed(),
            store.len()
        );
        wall_pauses.report("  load/save/touch while reclaiming and shrinking, wall");
        own_pauses.report("  the same, own time");
        println!(
            "  slowest own: {} {:?}, with {} sessions left",
            worst.1, worst.0, worst.2
        );
        println!(
            "  RSS after the mass expiry {} ({} at the peak, {} empty)",
            mb(rss_after),
            mb(rss_peak),
            mb(rss_empty)
        );
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
            black_box(rt.block_on(store.load(&ids[i], Timestamp::now())).unwrap())
        })
    });
    g.bench_function("save_one_key", |b| {
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(
                rt.block_on(store.save(
                    &ids[i],
                    &changes,
                    Renewal::until(unix_ms().saturating_add(Duration::from_secs(3600))),
                ))
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

/// The baseline of `memory_store_contention`: every session behind one
/// global lock (the custom-store example of the `SessionStore` docs).
#[derive(Default)]
struct MutexHashMap(Mutex<HashMap<SessionId, Record>>);

impl MutexHashMap {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Record>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MutexHashMap {
    fn do_load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
        Ok(self.map().get(id).cloned())
    }

    fn do_create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let mut map = self.map();
        if map.contains_key(id) {
            return Ok(false);
        }
        map.insert(*id, record.clone());
        Ok(true)
    }

    fn do_save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: Timestamp,
    ) -> Result<SaveOutcome, StoreError> {
        let mut map = self.map();
        let Some(record) = map.get_mut(id) else {
            return Ok(SaveOutcome::Gone);
        };
        record.items.apply(changes);
        record.meta.apply(changes);
        record.expires_at = if changes.sets_idle_timeout() {
            expires_at
        } else {
            record.expires_at.max(expires_at)
        };
        if record.items.is_empty() {
            map.remove(id);
            return Ok(SaveOutcome::Deleted);
        }
        Ok(SaveOutcome::Saved)
    }

    fn do_delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }

    fn do_end(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
        self.map()
            .retain(|k, r| k != id && r.public_id != *public_id);
        Ok(())
    }

    fn do_touch(&self, id: &SessionId, expires_at: Timestamp) -> Result<bool, StoreError> {
        Ok(self
            .map()
            .get_mut(id)
            .map(|r| {
                r.expires_at = r.expires_at.max(expires_at);
            })
            .is_some())
    }
}

impl SessionStore for MutexHashMap {
    fn load(&self, id: &SessionId, _now: Timestamp) -> StoreFuture<Option<Record>> {
        StoreFuture::ready(self.do_load(id))
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_create(id, record))
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        StoreFuture::ready(self.do_save(id, changes, at.expires_at))
    }

    fn cycle(
        &self,
        _old: &SessionId,
        _new: &SessionId,
        _changes: &ChangeSet,
        _at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        unimplemented!("not benched")
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_delete(id))
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_end(id, public_id))
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_touch(id, at.expires_at))
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let map = self.0.lock().unwrap();
        let listed = map
            .values()
            .filter(|r| r.expires_at > now && r.meta.link(name) == Some(value))
            .map(Listed::of)
            .collect();
        StoreFuture::ready(Ok(Listed::newest(listed, limit)))
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let mut map = self.0.lock().unwrap();
        let mut found = map
            .values()
            .filter(|r| r.meta.link(name) == Some(value))
            .map(|r| (r.created_at, r.public_id))
            .collect();
        let victims = keep.victims(&mut found);
        map.retain(|_, r| !victims.contains(&r.public_id));
        StoreFuture::ready(Ok(victims.len()))
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let mut map = self.0.lock().unwrap();
        let before = map.len();
        map.retain(|_, r| r.public_id != *public_id || !r.meta.has_links());
        StoreFuture::ready(Ok(map.len() < before))
    }
}

/// Runs a store future that is ready at once (both stores here are
/// synchronous inside), without a runtime.
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("in-memory stores answer at once"),
    }
}

/// `iters` load + save pairs split over `threads` threads, each on its own
/// sessions; the wall time of the lot.
fn hammer<S: SessionStore>(
    store: &S,
    ids: &[Vec<SessionId>],
    threads: usize,
    iters: u64,
) -> Duration {
    let mut changes = ChangeSet::new();
    changes.set("seen", "1");
    let expires_at = unix_ms().saturating_add(Duration::from_secs(3600));
    let per_thread = iters.div_ceil(threads as u64);
    let changes = &changes;
    let start = Instant::now();
    std::thread::scope(|scope| {
        for mine in &ids[..threads] {
            scope.spawn(move || {
                for i in 0..per_thread {
                    let id = &mine[i as usize % mine.len()];
                    // One clock read per request, as the layer does.
                    let at = Renewal::until(expires_at);
                    black_box(now(store.load(id, at.now)).unwrap());
                    black_box(now(store.save(id, changes, at)).unwrap());
                }
            });
        }
    });
    start.elapsed()
}

fn contention(c: &mut Criterion) {
    const THREADS: usize = 2;
    const PER_THREAD: usize = 10_000;
    let ids: Vec<Vec<SessionId>> = (0..THREADS)
        .map(|_| (0..PER_THREAD).map(|_| new_id()).collect())
        .collect();
    let ours = MemoryStore::new();
    let baseline = MutexHashMap::default();
    for id in ids.iter().flatten() {
        let r = record(Duration::from_secs(3600));
        assert!(now(ours.create(id, &r)).unwrap());
        assert!(now(baseline.create(id, &r)).unwrap());
    }
    let mut g = c.benchmark_group("memory_store_contention");
    g.throughput(Throughput::Elements(1));
    for threads in [1, 2] {
        let label = if threads == 1 {
            "1_thread"
        } else {
            "2_threads"
        };
        g.bench_function(BenchmarkId::new("memory_store", label), |b| {
            b.iter_custom(|iters| hammer(&ours, &ids, threads, iters))
        });
        g.bench_function(BenchmarkId::new("mutex_hashmap", label), |b| {
            b.iter_custom(|iters| hammer(&baseline, &ids, threads, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, ops, contention);

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
    if !filtered || args.iter().any(|a| a == "growth") {
        let n = std::env::var("MEMORY_STORE_GROWTH")
            .ok()
            .map(|v| v.parse().expect("MEMORY_STORE_GROWTH is a session count"))
            .unwrap_or(1_000_000);
        growth(n);
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
