//! What TLS costs `RedisStore`: the time to connect, and a load and a save
//! round trip, over TLS and over plain TCP, against two local
//! `redis-server`s this example starts (one plain, one serving TLS only
//! with a CA and certificate it makes with rcgen).
//!
//! ```text
//! cargo run --release --example redis_tls_cost --features redis-tls
//! ```
//!
//! Needs `redis-server` (built with TLS, as Debian's is) on `PATH`. Prints
//! medians and 99th percentiles; `ROUNDS` (default 2000) sets how many
//! loads and saves each measurement takes, `CONNECTS` (default 100) how
//! many connections. Both servers run on this machine, so the figures are
//! the cost of TLS itself (handshake, encryption) without network latency:
//! over a network the handshake costs one or two more round trips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tower_session_storage::store::{ChangeSet, Items, Meta, Record, Renewal, Timestamp};
use tower_session_storage::{PublicId, RedisStore, RedisTls, SessionId, SessionStore};

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let rounds = env_number("ROUNDS", 2000);
    let connects = env_number("CONNECTS", 100);
    let dir = std::env::temp_dir().join(format!("tss-tls-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run(&dir, rounds, connects).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &Path, rounds: usize, connects: usize) -> Result<(), Error> {
    let pki = Pki::make(dir)?;
    let plain = Server::start(&["--port", &free_port()?.to_string()])?;
    let tls_port = free_port()?.to_string();
    let ca = pki.ca.display().to_string();
    let (cert, key) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
    );
    let tls_server = Server::start(&[
        "--port",
        "0",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ])?;
    let plain_url = format!("redis://127.0.0.1:{}", plain.port);
    let tls_url = format!("rediss://127.0.0.1:{tls_port}");
    let tls = RedisTls::new().with_root_certificates(std::fs::read(&pki.ca)?);

    // Wait until both answer.
    let plain_store = retry(|| RedisStore::connect(&plain_url)).await?;
    let tls_store = retry(|| RedisStore::connect_tls(&tls_url, tls.clone())).await?;

    println!("redis-server on 127.0.0.1, one plain, one TLS-only (TLS 1.3, rustls + ring)");
    println!("{connects} connections, {rounds} loads and {rounds} saves each; median / p99\n");

    let c_plain = time_n(connects, || async {
        drop(RedisStore::connect(&plain_url).await?);
        Ok(())
    })
    .await?;
    let c_tls = time_n(connects, || async {
        drop(RedisStore::connect_tls(&tls_url, tls.clone()).await?);
        Ok(())
    })
    .await?;
    row(
        "RedisStore::connect (handshake, SCRIPT LOAD, CONFIG GET)",
        &c_plain,
        &c_tls,
    );

    let raw_plain = redis::Client::open(plain_url.as_str())?;
    let raw_tls = redis::Client::build_with_tls(
        tls_url.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&pki.ca)?),
        },
    )?;
    let h_plain = time_n(connects, || async {
        drop(raw_plain.get_multiplexed_async_connection().await?);
        Ok(())
    })
    .await?;
    let h_tls = time_n(connects, || async {
        drop(raw_tls.get_multiplexed_async_connection().await?);
        Ok(())
    })
    .await?;
    row(
        "one connection (TCP + TLS handshake + HELLO)",
        &h_plain,
        &h_tls,
    );

    let (l_plain, s_plain) = requests(&plain_store, rounds).await?;
    let (l_tls, s_tls) = requests(&tls_store, rounds).await?;
    row("load (HGETALL), one round trip", &l_plain, &l_tls);
    row(
        "save (a change set, EVALSHA), one round trip",
        &s_plain,
        &s_tls,
    );

    drop((plain, tls_server));
    Ok(())
}

/// Times `rounds` loads and `rounds` saves of one session with two small
/// items.
async fn requests(
    store: &RedisStore,
    rounds: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), Error> {
    let store = store
        .clone()
        .with_key_prefix(format!("cost{}:", std::process::id()));
    let id: SessionId = uuid::Uuid::new_v4().to_string().parse()?;
    let now = Timestamp::now();
    let until = now.saturating_add(Duration::from_secs(600));
    let record = Record {
        items: [("user_id", "alice"), ("csrf", "0123456789abcdef")]
            .into_iter()
            .collect::<Items>(),
        created_at: now,
        expires_at: until,
        public_id: PublicId::generate(),
        meta: Meta::new(),
    };
    store.create(&id, &record).await?;
    // Warm up (scripts cached, connection busy).
    for _ in 0..100 {
        store.load(&id, Timestamp::now()).await?;
    }
    let loads = time_n(rounds, || async {
        store.load(&id, Timestamp::now()).await?;
        Ok(())
    })
    .await?;
    let mut n = 0u64;
    let saves = time_n(rounds, || {
        n += 1;
        let mut changes = ChangeSet::new();
        changes.set("visits", &n.to_string());
        let store = &store;
        async move {
            store.save(&id, &changes, Renewal::until(until)).await?;
            Ok(())
        }
    })
    .await?;
    store.delete(&id).await?;
    Ok((loads, saves))
}

async fn time_n<F, Fut>(n: usize, mut f: F) -> Result<Vec<Duration>, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn row(what: &str, plain: &[Duration], tls: &[Duration]) {
    let (pm, p99) = (pct(plain, 50), pct(plain, 99));
    let (tm, t99) = (pct(tls, 50), pct(tls, 99));
    println!("{what}");
    println!("  plain TCP: {:>9.1} µs / {:>9.1} µs", us(pm), us(p99));
    println!(
        "  TLS:       {:>9.1} µs / {:>9.1} µs   (median +{:.1} µs, x{:.2})\n",
        us(tm),
        us(t99),
        us(tm) - us(pm),
        us(tm) / us(pm).max(0.001)
    );
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn retry<F, Fut>(mut f: F) -> Result<RedisStore, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<RedisStore, tower_session_storage::StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A `redis-server` child process, killed (by its pid) when dropped.
struct Server {
    child: Child,
    port: String,
}

impl Server {
    fn start(args: &[&str]) -> Result<Server, Error> {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (is it on PATH?): {e}"))?;
        let port = args.get(1).map(|p| p.to_string()).unwrap_or_default();
        Ok(Server { child, port })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Result<Pki, Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "redis_tls_cost CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let leaf =
            CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&pki.ca, ca_cert.pem())?;
        std::fs::write(&pki.cert, leaf.pem())?;
        std::fs::write(&pki.key, key.serialize_pem())?;
        Ok(pki)
    }
}
