//! What `RedisStore` costs Redis: bytes of memory per session and Redis
//! CPU per read and per write, on a standalone server and a 3-node Cluster
//! that the example starts itself.
//!
//! ```text
//! cargo run --release --example redis_capacity --features redis [COUNT] [OPS]
//! ```
//!
//! Needs `redis-server` (7.0 or later) and `redis-cli` on `PATH`; each
//! server runs on a free loopback port with no persistence and is stopped
//! at the end. For each deployment it:
//!
//! 1. creates COUNT sessions (default 1,000,000) through the store, each
//!    holding two small items, `user_id = "12345"` and a 32-character
//!    `csrf` (as `examples/memory.rs`), and reports the growth of Redis's
//!    `used_memory` (summed over the nodes) per session, with `MEMORY
//!    USAGE` and `OBJECT ENCODING` of one session key;
//! 2. loads OPS sessions (default 200,000), 64 at a time, then saves OPS
//!    sessions (a new `csrf`, the expiry moved forward: the common write),
//!    and reports Redis's CPU per operation two ways: the server
//!    processes' CPU time (`/proc/<pid>/stat`, user + system, summed over
//!    the nodes: everything Redis spent, parsing and network included),
//!    and `INFO commandstats` (the time inside the commands only; a
//!    script's commands are part of its `evalsha`).
//!
//! Linux only (`/proc`). Uses about 300 MB of Redis memory per million
//! sessions on each deployment.

#[path = "../tests/redis_support/mod.rs"]
#[allow(unreachable_pub, unused_imports)]
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis_support::{Cluster, Redis};
use tower_session_storage::store::{ChangeSet, Items, Meta, Record, Renewal, Timestamp};
use tower_session_storage::{PublicId, RedisStore, SessionId, SessionStore};

/// How many operations are in flight at once.
const IN_FLIGHT: usize = 64;

fn csrf(n: u64) -> String {
    format!(
        "{:032x}",
        u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    )
}

fn new_id() -> SessionId {
    uuid::Uuid::new_v4()
        .to_string()
        .parse()
        .expect("a v4 uuid is a session id")
}

/// `INFO <section>` of one node, as `name:value` lines.
fn info(node: &Redis, section: &str) -> String {
    node.info(section)
}

fn info_u64(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Microseconds spent inside each command, summed over `nodes`, by
/// command name.
fn command_usec(nodes: &[&Redis]) -> Vec<(String, u64, u64)> {
    let mut all: Vec<(String, u64, u64)> = Vec::new();
    for n in nodes {
        for line in info(n, "commandstats").lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            let field = |f: &str| {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let (calls, usec) = (field("calls"), field("usec"));
            match all.iter_mut().find(|(n, _, _)| n == name) {
                Some(e) => {
                    e.1 += calls;
                    e.2 += usec;
                }
                None => all.push((name.to_owned(), calls, usec)),
            }
        }
    }
    all.sort();
    all
}

/// CPU time (user + system) of the process `pid`, from `/proc`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after
    // the name. Clock ticks: 100 per second on Linux.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn total_cpu(nodes: &[&Redis]) -> Duration {
    nodes.iter().map(|n| cpu_time(n.pid())).sum()
}

fn used_memory(nodes: &[&Redis]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let _ = redis::cmd("MEMORY")
                .arg("PURGE")
                .query::<redis::Value>(&mut n.admin());
            info_u64(&info(n, "memory"), "used_memory")
        })
        .sum()
}

fn reset_stats(nodes: &[&Redis]) {
    for n in nodes {
        let _: redis::Value = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut n.admin())
            .expect("CONFIG RESETSTAT");
    }
}

/// Runs `op` for every index in `0..n`, [`IN_FLIGHT`] at a time.
async fn run_all<F, Fut>(n: usize, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (op, next) = (op.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                op(i).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a worker panicked");
    }
}

struct Figures {
    bytes_per_session: f64,
    usage: String,
    encoding: String,
    read_cpu_us: f64,
    write_cpu_us: f64,
    read_cmd_us: f64,
    write_cmd_us: f64,
    read_cmds: String,
    write_cmds: String,
}

async fn measure(store: RedisStore, nodes: &[&Redis], count: usize, ops: usize) -> Figures {
    let key_prefix = "session:";
    let ids: Arc<Vec<SessionId>> = Arc::new((0..count).map(|_| new_id()).collect());
    let ttl = 30 * 60 * 1000;

    // 1. Memory.
    let before = used_memory(nodes);
    let started = Instant::now();
    {
        let (store, ids) = (store.clone(), ids.clone());
        run_all(count, move |i| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let now = Timestamp::now().as_millis();
                let record = Record {
                    items: [("user_id", "12345"), ("csrf", csrf(i as u64).as_str())]
                        .into_iter()
                        .collect::<Items>(),
                    created_at: Timestamp::from_millis(now),
                    expires_at: Timestamp::from_millis(now + ttl),
                    public_id: PublicId::generate(),
                    meta: Meta::new(),
                };
                assert!(store.create(&ids[i], &record).await.expect("create"));
            }
        })
        .await;
    }
    let fill = started.elapsed();
    let after = used_memory(nodes);
    let bytes_per_session = (after.saturating_sub(before)) as f64 / count as f64;
    let key = {
        let id = ids[0].to_string();
        format!("{key_prefix}{{{id}}}")
    };
    let owner = nodes
        .iter()
        .find(|n| {
            redis::cmd("EXISTS")
                .arg(&key)
                .query::<i64>(&mut n.admin())
                .unwrap_or(0)
                == 1
        })
        .expect("the first session is on some node");
    let usage: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query(&mut owner.admin())
        .unwrap_or(-1);
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query(&mut owner.admin())
        .unwrap_or_default();
    println!(
        "  filled {count} sessions in {:.1} s ({:.0} creates/s)",
        fill.as_secs_f64(),
        count as f64 / fill.as_secs_f64()
    );

    // 2. Reads.
    reset_stats(nodes);
    let cpu0 = total_cpu(nodes);
    {
        let (store, ids) = (store.clone(), ids.clone());
        run_all(ops, move |i| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let r = store
                    .load(&ids[i % ids.len()], Timestamp::now())
                    .await
                    .expect("load");
                assert!(r.is_some(), "every session is there");
            }
        })
        .await;
    }
    let read_cpu = total_cpu(nodes) - cpu0;
    let read_stats = command_usec(nodes);

    // 3. Writes: the common one, one item set and the expiry moved forward.
    reset_stats(nodes);
    let cpu0 = total_cpu(nodes);
    {
        let (store, ids) = (store.clone(), ids.clone());
        run_all(ops, move |i| {
            let (store, ids) = (store.clone(), ids.clone());
            async move {
                let mut c = ChangeSet::new();
                c.set("csrf", &csrf(i as u64 + 7));
                let exp = Timestamp::from_millis(Timestamp::now().as_millis() + ttl + 1);
                let out = store
                    .save(&ids[i % ids.len()], &c, Renewal::until(exp))
                    .await
                    .expect("save");
                assert_eq!(
                    format!("{out:?}"),
                    "Saved",
                    "every session is there to save"
                );
            }
        })
        .await;
    }
    let write_cpu = total_cpu(nodes) - cpu0;
    let write_stats = command_usec(nodes);

    let per = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
    // The commands the store sent: a script's own commands are counted
    // inside its `evalsha` too, so when there is a script only it counts.
    let ours = |n: &str| {
        !["config", "info", "memory", "exists", "object"]
            .iter()
            .any(|o| n.starts_with(o))
    };
    let cmd_us = |s: &[(String, u64, u64)]| {
        let scripted = s.iter().any(|(n, _, _)| n == "evalsha" || n == "eval");
        s.iter()
            .filter(|(n, _, _)| ours(n) && (!scripted || n == "evalsha" || n == "eval"))
            .map(|(_, _, u)| *u)
            .sum::<u64>() as f64
            / ops as f64
    };
    let show = |s: &[(String, u64, u64)]| {
        s.iter()
            .filter(|(n, _, _)| ours(n))
            .map(|(n, c, u)| {
                format!(
                    "{n} {:.2} calls {:.2} µs",
                    *c as f64 / ops as f64,
                    *u as f64 / ops as f64
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Figures {
        bytes_per_session,
        usage: usage.to_string(),
        encoding,
        read_cpu_us: per(read_cpu),
        write_cpu_us: per(write_cpu),
        read_cmd_us: cmd_us(&read_stats),
        write_cmd_us: cmd_us(&write_stats),
        read_cmds: show(&read_stats),
        write_cmds: show(&write_stats),
    }
}

fn report(name: &str, f: &Figures) {
    println!("{name}:");
    println!(
        "  memory: {:.0} B per session (used_memory growth); one key: MEMORY USAGE {} B, encoding {}",
        f.bytes_per_session, f.usage, f.encoding
    );
    println!(
        "  sessions per GiB of used_memory: {:.1} million",
        (1u64 << 30) as f64 / f.bytes_per_session / 1e6
    );
    println!(
        "  read:  {:.2} µs Redis process CPU, {:.2} µs in commands ({})",
        f.read_cpu_us, f.read_cmd_us, f.read_cmds
    );
    println!(
        "  write: {:.2} µs Redis process CPU, {:.2} µs in commands ({})",
        f.write_cpu_us, f.write_cmd_us, f.write_cmds
    );
    println!(
        "  write / read: {:.2}× by process CPU, {:.2}× in commands",
        f.write_cpu_us / f.read_cpu_us,
        f.write_cmd_us / f.read_cmd_us
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args
        .next()
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let ops: usize = args
        .next()
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(200_000);
    if !redis_support::available() {
        eprintln!("redis_capacity: redis-server and redis-cli are needed on PATH");
        std::process::exit(1);
    }
    println!("{count} sessions of two small items; {ops} reads, then {ops} writes, {IN_FLIGHT} in flight");

    let server = Redis::start();
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect to the standalone server");
    let f = measure(store, &[&server], count, ops).await;
    report("standalone", &f);
    drop(server);

    let cluster = Cluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls())
        .await
        .expect("connect to the cluster");
    let nodes: Vec<&Redis> = cluster.nodes().iter().collect();
    let f = measure(store, &nodes, count, ops).await;
    report("cluster (3 primaries)", &f);
}
