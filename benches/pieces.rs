//! The pieces of a request's cost, one at a time, to find where the
//! nanoseconds of `benches/session.rs` go.
//!
//! - `clock`: the clock reads a request makes (the store's `now_millis` reads
//!   the wall clock and two monotonic clocks, std's and tokio's; with tokio's
//!   `test-util` feature, enabled by this crate's dev-dependencies, tokio's
//!   clock checks whether any clock was ever paused first);
//! - `store`: `MemoryStore::load` of one of 512 sessions, next to a bare
//!   `DashMap<Uuid, Arc<str>>` look-up (what the minimal layer does), and
//!   the id parse;
//! - `headers`: the request and response header look-ups the layer makes;
//! - `handle`: the allocations each request makes (an `Arc` handle, an
//!   extension slot).
//!
//! ```text
//! cargo bench --bench pieces
//! ```
// `criterion_main!` makes an undocumented `main`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, SET_COOKIE, USER_AGENT};
use http::{HeaderMap, HeaderValue};
use tower_session_storage::store::{Items, Record, StoreFuture, Timestamp};
use tower_session_storage::{MemoryStore, PublicId, SessionId, SessionStore, StoreError};
use uuid::Uuid;

const SESSIONS: usize = 512;

/// The answer of a store call that answers at once (the memory store's do).
fn now<T>(fut: StoreFuture<T>) -> Result<T, StoreError> {
    match fut.into_ready() {
        Ok(out) => out,
        Err(_) => panic!("not ready"),
    }
}

fn clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    g.bench_function("system_time_now", |b| {
        b.iter(|| black_box(SystemTime::now()))
    });
    g.bench_function("instant_now", |b| b.iter(|| black_box(Instant::now())));
    g.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    g.bench_function("tokio_instant_now_in_runtime", |b| {
        let _in = rt.enter();
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    // What `store::now_millis` does (src/store/mod.rs).
    g.bench_function("now_millis_as_written", |b| {
        b.iter(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            let real = Instant::now();
            let tokio = tokio::time::Instant::now().into_std();
            black_box(match tokio.checked_duration_since(real) {
                Some(ahead) => wall.saturating_add(ahead.as_millis() as u64),
                None => wall.saturating_sub(real.duration_since(tokio).as_millis() as u64),
            })
        })
    });
    g.bench_function("wall_millis_only", |b| {
        b.iter(|| {
            black_box(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
            )
        })
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let store = MemoryStore::new();
    let minimal: DashMap<Uuid, Arc<str>> = DashMap::new();
    let mut ids = Vec::new();
    let mut uuids = Vec::new();
    let mut texts = Vec::new();
    for _ in 0..SESSIONS {
        let u = Uuid::new_v4();
        let text = u.hyphenated().to_string();
        let id: SessionId = text.parse().unwrap();
        let mut items = Items::new();
        items.insert("user_id", "12345");
        items.insert("csrf", "0123456789abcdef0123456789abcdef");
        let record = Record {
            items,
            created_at: Timestamp::from_millis(ms),
            expires_at: Timestamp::from_millis(ms + 3_600_000),
            public_id: PublicId::generate(),
            meta: tower_session_storage::store::Meta::new(),
        };
        assert!(now(store.create(&id, &record)).unwrap());
        minimal.insert(
            u,
            Arc::from("user_id=12345;csrf=0123456789abcdef0123456789abcdef"),
        );
        ids.push(id);
        uuids.push(u);
        texts.push(text);
    }
    let mut i = 0;
    g.bench_function("memory_store_load", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            black_box(now(store.load(&ids[i], Timestamp::now())).unwrap())
        })
    });
    g.bench_function("dashmap_get_arc_str", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            black_box(minimal.get(&uuids[i]).map(|r| r.value().clone()))
        })
    });
    g.bench_function("session_id_parse", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            black_box(texts[i].parse::<SessionId>().unwrap())
        })
    });
    g.bench_function("uuid_try_parse_ascii", |b| {
        b.iter(|| {
            i = (i + 1) % SESSIONS;
            black_box(Uuid::try_parse_ascii(texts[i].as_bytes()).unwrap())
        })
    });
    g.finish();
}

/// A browser-like request's headers, with the session cookie among others.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_static("127.0.0.1:3000"));
    h.insert(
        USER_AGENT,
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101"),
    );
    h.insert(
        COOKIE,
        HeaderValue::from_static(
            "theme=dark; id=0b2c6f4e-9f0a-4c1d-8e2b-3a4b5c6d7e8f; _ga=GA1.1.123456789.1700000000",
        ),
    );
    h
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("headers");
    let req = request_headers();
    g.bench_function("get_cookie", |b| b.iter(|| black_box(req.get(COOKIE))));
    g.bench_function("contains_key_cookie", |b| {
        b.iter(|| black_box(req.contains_key(COOKIE)))
    });
    g.bench_function("get_content_type_absent", |b| {
        b.iter(|| black_box(req.get(CONTENT_TYPE)))
    });
    g.bench_function("entry_cookie_set_sensitive", |b| {
        b.iter_batched_ref(
            request_headers,
            |h| {
                if let http::header::Entry::Occupied(mut e) = h.entry(COOKIE) {
                    e.iter_mut().for_each(|v| v.set_sensitive(true));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut res = HeaderMap::new();
    res.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
    g.bench_function("response_get_all_set_cookie", |b| {
        b.iter(|| black_box(res.get_all(SET_COOKIE).iter().next().is_some()))
    });
    g.finish();
}

/// About the size of the crate's handle state (ids, the snapshot, the
/// change set, flags).
#[allow(dead_code)]
#[derive(Default)]
struct State([u64; 12]);

fn handle(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle");
    g.bench_function("arc_mutex_new_drop", |b| {
        b.iter(|| black_box(Arc::new(Mutex::new(State::default()))))
    });
    g.bench_function("extensions_insert_into_empty", |b| {
        b.iter_batched_ref(
            http::Extensions::new,
            |e| {
                e.insert(Arc::new(1u64));
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let shared = Arc::new(0u64);
    g.bench_function("arc_clone_drop", |b| {
        b.iter(|| black_box(Arc::clone(&shared)))
    });
    g.finish();
}

criterion_group!(benches, clock, store, headers, handle);
criterion_main!(benches);
