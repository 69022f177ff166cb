//! Real `redis-server` processes for the Redis tests, on loopback ports.
//!
//! - [`available`] finds `redis-server` (and `redis-cli`) on `PATH`. When
//!   they are missing it prints a loud `SKIP` and the test returns, unless
//!   `CI=true`, where it panics: CI must run these tests.
//! - [`Redis`] is one standalone server on a free port with its own data
//!   directory, stopped (SIGTERM, then waited for) when dropped. It can be
//!   crashed ([`Redis::crash`], SIGKILL), restarted on the same port and
//!   directory ([`Redis::restart`]), and frozen ([`Redis::freeze`], SIGSTOP).
//!   [`Redis::start_replica_of`] starts a replica of a server
//!   ([`Redis::start_primary`]), ready once it has synced.
//! - [`Cluster`] is a 3-primary Redis Cluster made with
//!   `redis-cli --cluster create`, ready once every node reports
//!   `cluster_state:ok`; [`Cluster::start_with_replicas`] adds one replica
//!   per primary and a 1 s `cluster-node-timeout` for quick failovers
//!   ([`Cluster::primary_of`] says which node owns a key now).
//! - [`shared`] and [`shared_cluster`] are one server and one cluster per
//!   test binary, for the tests that only need *a* Redis; tests keep apart
//!   by key prefix ([`unique_prefix`]).
//! - [`CountingProxy`] (in `proxy.rs`) forwards TCP to a server and counts
//!   the commands the client sends: the store's round trips, exactly
//!   (Redis's own `INFO commandstats` also counts the commands run inside
//!   scripts).
//! - [`sentinel::SentinelSet`] (in `sentinel.rs`) is a primary, a replica
//!   and three sentinels (`redis-server --sentinel`), quick to fail over;
//!   [`sentinel::SentinelSet::start_tls`] runs it over TLS.
//!
//! - TLS (feature `redis-tls`): [`Redis::start_tls`] and
//!   [`Cluster::start_tls`] serve TLS only (`--port 0 --tls-port …`) with
//!   certificates from [`TlsFiles`] (a CA, server and client certificates
//!   made by rcgen); the helpers' own connections then use TLS too.
//!
//! Every server runs under a tiny `sh` wrapper that holds a pipe from the
//! test process on its stdin: when the test process exits, however it
//! exits, the pipe closes and the wrapper stops the server. So servers held
//! in statics (never dropped) do not outlive the test run either.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

mod proxy;
pub(crate) mod sentinel;
mod tls;

#[allow(unused_imports)]
pub(crate) use proxy::CountingProxy;
#[allow(unused_imports)]
pub(crate) use tls::TlsFiles;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The wrapper: starts the server, prints its pid, waits for stdin to close
/// (the test dropped the handle or exited), then stops the server, waits
/// for it, and removes `$TSS_RM` when set.
const WRAPPER: &str = r#""$@" & pid=$!
echo "$pid"
read -r _ignored
kill "$pid" 2>/dev/null
wait "$pid"
if [ -n "$TSS_RM" ]; then rm -rf "$TSS_RM"; fi
"#;

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether `redis-server` and `redis-cli` are on `PATH`. When they are not:
/// panics under `CI=true`, otherwise prints a loud SKIP and returns false
/// (the test then returns without checking anything).
pub(crate) fn available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        find_on_path("redis-server").is_some() && find_on_path("redis-cli").is_some()
    });
    if !found {
        if in_ci() {
            panic!(
                "redis-server / redis-cli not found on PATH, and CI=true: the Redis tests must run \
                 in CI. Install them (apt-get install redis-server)"
            );
        }
        // Straight to the process's stderr, past the test harness's output
        // capture, once per test binary: a skip must not look like a pass.
        static BANNER: std::sync::Once = std::sync::Once::new();
        BANNER.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\n\
                 ************************************************************************\n\
                 SKIP: redis-server not found; install it (apt-get install redis-server)\n\
                 to run the Redis tests\n\
                 ************************************************************************\n"
            );
        });
    }
    found
}

/// A fresh key prefix, so tests sharing a server never see each other's keys.
pub(crate) fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn random_u64() -> u64 {
    (uuid::Uuid::new_v4().as_u128() >> 64) as u64
}

/// A new empty directory under the system temp dir.
fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tss-redis-{what}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        random_u64() & 0xffff_ffff
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port that was free a moment ago (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port `p < 55535` such that `p` and its cluster bus port `p + 10000`
/// were both free a moment ago.
fn free_cluster_port() -> u16 {
    loop {
        let p = 20_000 + (random_u64() % 25_000) as u16;
        let a = TcpListener::bind(("127.0.0.1", p));
        let b = TcpListener::bind(("127.0.0.1", p + 10_000));
        if a.is_ok() && b.is_ok() {
            return p;
        }
    }
}

/// A running server process under the wrapper.
struct Proc {
    sh: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl Proc {
    fn spawn(args: &[String], remove_on_exit: Option<&Path>) -> Proc {
        let server = find_on_path("redis-server").expect("redis-server on PATH");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(server)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match remove_on_exit {
            Some(dir) => cmd.env("TSS_RM", dir),
            None => cmd.env_remove("TSS_RM"),
        };
        let mut sh = cmd.spawn().expect("spawn sh for redis-server");
        let mut line = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line.trim().parse().expect("the wrapper prints the pid");
        let stdin = sh.stdin.take();
        Proc { sh, stdin, pid }
    }

    /// Whether the server process has exited (it is then a zombie of the
    /// wrapper, or gone).
    fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {}", self.pid);
    }

    /// Closes the wrapper's stdin (it stops the server: SIGTERM, wait) and
    /// waits for the wrapper. A server that ignores SIGTERM for 10 s (one
    /// busy running a script does) gets SIGKILL, so a failed test cannot
    /// hang the run.
    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.sh.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(self.pid.to_string())
                    .status();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.sh.wait();
    }
}

/// One standalone `redis-server` on `127.0.0.1:<free port>`.
pub(crate) struct Redis {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    proc: Option<Proc>,
    /// Whether dropping the handle removes `dir` (servers in statics leave
    /// that to the wrapper).
    owns_dir: bool,
    /// Serves TLS only, with these certificates.
    tls: Option<Arc<TlsFiles>>,
}

impl Redis {
    /// A server with no persistence (`--save "" --appendonly no`).
    pub(crate) fn start() -> Redis {
        Self::start_with(&["--save", "", "--appendonly", "no"], true)
    }

    /// A server with the AOF on and fsynced on every write, so a SIGKILL
    /// loses nothing and a restart on the same directory has every session.
    pub(crate) fn start_durable() -> Redis {
        Self::start_with(
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            true,
        )
    }

    /// A server with no persistence and `extra` arguments (e.g.
    /// `["--maxmemory-policy", "allkeys-lru"]`).
    pub(crate) fn start_args(extra: &[&str]) -> Redis {
        let mut args = vec!["--save", "", "--appendonly", "no"];
        args.extend_from_slice(extra);
        Self::start_with(&args, true)
    }

    /// A server ready to have replicas: no persistence, and replicas sync at
    /// once (`--repl-diskless-sync-delay 0`).
    pub(crate) fn start_primary() -> Redis {
        Self::start_args(&["--repl-diskless-sync-delay", "0"])
    }

    /// A replica of `primary` (no persistence), ready once its link to the
    /// primary is up. Start the primary with `--repl-diskless-sync-delay 0`
    /// (as [`start_primary`](Self::start_primary) does), or the first sync
    /// waits 5 s.
    pub(crate) fn start_replica_of(primary: &Redis) -> Redis {
        let port = primary.port.to_string();
        let r = Self::start_args(&["--replicaof", "127.0.0.1", &port]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.info("replication").contains("master_link_status:up") {
            assert!(Instant::now() < deadline, "the replica never synced");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// A server that serves TLS only (`--port 0 --tls-port <port>`) with
    /// the certificates of `tls`, and `extra` arguments (e.g.
    /// `["--tls-auth-clients", "no"]`; Redis demands client certificates
    /// by default).
    pub(crate) fn start_tls(tls: &Arc<TlsFiles>, extra: &[&str]) -> Redis {
        let mut args = vec!["--save", "", "--appendonly", "no"];
        args.extend_from_slice(extra);
        Self::start_inner(&args, true, Some(tls))
    }

    /// Serves the expired server certificate of its [`TlsFiles`] from now
    /// on (`CONFIG SET tls-cert-file`: new handshakes only).
    pub(crate) fn serve_expired_certificate(&self) {
        let tls = self.tls.as_ref().expect("a TLS server");
        let mut admin = self.admin();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("tls-cert-file")
            .arg(tls.expired_cert.to_str().unwrap())
            .arg("tls-key-file")
            .arg(tls.expired_key.to_str().unwrap())
            .query(&mut admin)
            .unwrap();
    }

    fn start_with(extra: &[&str], owns_dir: bool) -> Redis {
        Self::start_inner(extra, owns_dir, None)
    }

    /// `--port <port>` (or, with TLS, `--port 0 --tls-port <port>` and the
    /// certificate files), and the settings every test server shares: loopback only, its own
    /// directory and log file, in the foreground.
    fn port_args(port: u16, tls: Option<&Arc<TlsFiles>>, dir: &std::path::Path) -> Vec<String> {
        let mut args = match tls {
            None => vec!["--port".to_owned(), port.to_string()],
            Some(t) => t.server_args(port),
        };
        let dir = dir.to_str().unwrap();
        let common = [
            "--bind",
            "127.0.0.1",
            "--dir",
            dir,
            "--logfile",
            "redis.log",
            "--daemonize",
            "no",
        ];
        args.extend(common.map(String::from));
        args
    }

    fn start_inner(extra: &[&str], owns_dir: bool, tls: Option<&Arc<TlsFiles>>) -> Redis {
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port();
            let dir = temp_dir(&format!("p{port}"));
            let mut args = Self::port_args(port, tls, &dir);
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut r = Redis {
                port,
                dir,
                args,
                proc: None,
                owns_dir,
                tls: tls.cloned(),
            };
            match r.launch() {
                Ok(()) => return r,
                Err(e) => last = e, // most likely the port was taken meanwhile
            }
        }
        panic!("could not start redis-server after 10 tries: {last}");
    }

    /// Starts the process with the stored arguments and waits for PING.
    fn launch(&mut self) -> Result<(), String> {
        let rm = (!self.owns_dir).then_some(self.dir.as_path());
        let proc = Proc::spawn(&self.args, rm);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                self.proc = Some(proc);
                return Ok(());
            }
            if proc.exited() || Instant::now() > deadline {
                proc.stop();
                return Err(format!(
                    "redis-server on port {} did not come up; log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A redis-rs client for this server (TLS with the test CA and client
    /// certificate when it serves TLS).
    pub(crate) fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url()),
            #[cfg(feature = "redis-tls")]
            Some(t) => redis::Client::build_with_tls(self.url(), t.certificates()),
            #[cfg(not(feature = "redis-tls"))]
            Some(_) => panic!("a TLS server needs the redis-tls feature"),
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = self.client() else {
            return false;
        };
        let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        match redis::cmd("PING").query::<String>(&mut c) {
            Ok(_) => true,
            // Up, and asking for a password (`requirepass`).
            Err(e) => e.code() == Some("NOAUTH"),
        }
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` for a TLS server.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The server process's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.as_ref().expect("running").pid
    }

    /// `CONFIG SET name value` on this server.
    pub(crate) fn config_set(&self, name: &str, value: &str) {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut self.admin())
            .unwrap();
    }

    /// A blocking admin connection (5 s timeouts, so a frozen server fails
    /// the test instead of hanging it).
    pub(crate) fn admin(&self) -> redis::Connection {
        let client = self.client().unwrap();
        let c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        c
    }

    /// Whether the server process runs (not crashed).
    pub(crate) fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// An admin connection, or `None` when the server does not answer.
    pub(crate) fn try_admin(&self) -> Option<redis::Connection> {
        let client = self.client().ok()?;
        let c = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(c)
    }

    /// `INFO <section>` as text.
    pub(crate) fn info(&self, section: &str) -> String {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.admin())
            .unwrap()
    }

    /// SIGKILL: a crash. The process is gone when this returns.
    pub(crate) fn crash(&mut self) {
        let proc = self.proc.take().expect("running");
        proc.signal("KILL");
        proc.stop();
    }

    /// Starts the server again on the same port and directory, with the
    /// same arguments (an AOF server reloads its data).
    pub(crate) fn restart(&mut self) {
        assert!(self.proc.is_none(), "crash() it first");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return,
                // The old socket may linger for a moment.
                Err(e) if Instant::now() > deadline => panic!("restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// SIGSTOP: the server hangs (connections stay open, nothing answers).
    pub(crate) fn freeze(&self) {
        self.proc.as_ref().expect("running").signal("STOP");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub(crate) fn thaw(&self) {
        self.proc.as_ref().expect("running").signal("CONT");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            // A frozen server does not act on SIGTERM until it runs again.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(p.pid.to_string())
                .status();
            p.stop();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A Redis Cluster on loopback: 3 primaries, and optionally one replica
/// each.
pub(crate) struct Cluster {
    nodes: Vec<Redis>,
    tls: Option<Arc<TlsFiles>>,
}

impl Cluster {
    /// 3 primaries, no replicas.
    pub(crate) fn start() -> Cluster {
        Self::start_inner(true, 0, 5000, None)
    }

    /// 3 primaries serving TLS only, the cluster bus over TLS too
    /// (`--tls-cluster yes`), with the certificates of `tls`; clients need
    /// a client certificate (Redis's default `tls-auth-clients yes`).
    pub(crate) fn start_tls(tls: &Arc<TlsFiles>) -> Cluster {
        Self::start_inner(true, 0, 5000, Some(tls))
    }

    /// 3 primaries and 3 replicas (one each), with a `cluster-node-timeout`
    /// of 1000 ms so a dead primary's replica takes over in a few seconds.
    /// Ready once every replica's link to its primary is up.
    pub(crate) fn start_with_replicas() -> Cluster {
        let c = Self::start_inner(true, 1, 1000, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &c.nodes {
            loop {
                let info = n.info("replication");
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < deadline, "a replica never synced");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        c
    }

    fn start_inner(
        owns_dirs: bool,
        replicas: usize,
        node_timeout_ms: u32,
        tls: Option<&Arc<TlsFiles>>,
    ) -> Cluster {
        let want = 3 * (1 + replicas);
        let mut nodes = Vec::new();
        while nodes.len() < want {
            let port = free_cluster_port();
            let dir = temp_dir(&format!("c{port}"));
            let mut args = Redis::port_args(port, tls, &dir);
            if tls.is_some() {
                args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            }
            args.extend(
                [
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    &node_timeout_ms.to_string(),
                    // Replicas sync at once, not after the default 5 s wait.
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            let mut r = Redis {
                port,
                dir,
                args,
                proc: None,
                owns_dir: owns_dirs,
                tls: tls.cloned(),
            };
            if r.launch().is_ok() {
                nodes.push(r);
            }
        }
        let cli = find_on_path("redis-cli").expect("redis-cli on PATH");
        let out = Command::new(cli)
            .args(tls.map(|t| t.cli_args()).unwrap_or_default())
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster {
            nodes,
            tls: tls.cloned(),
        };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and knows every
    /// node.
    fn wait_ok(&self) {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut n.admin())
                    .unwrap_or_default();
                info.contains("cluster_state:ok") && info.contains(&known)
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    pub(crate) fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    pub(crate) fn nodes_mut(&mut self) -> &mut [Redis] {
        &mut self.nodes
    }

    /// The index of the node that is the primary of `key`'s slot now, as
    /// a live node's `CLUSTER NODES` says (`None` while nobody owns it).
    pub(crate) fn primary_of(&self, key: &str) -> Option<usize> {
        let node = self.nodes.iter().find(|n| n.is_running())?;
        let mut c = node.try_admin()?;
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .ok()?;
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c).ok()?;
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|r| {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                matches!((lo.parse::<i64>(), hi.parse::<i64>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            if owns {
                let port: u16 = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// SIGKILL to every node.
    pub(crate) fn crash(&mut self) {
        for n in &mut self.nodes {
            n.crash();
        }
    }

    /// A blocking cluster connection (follows redirections) for setting up
    /// and inspecting keys.
    pub(crate) fn admin(&self) -> redis::cluster::ClusterConnection {
        let builder = redis::cluster::ClusterClient::builder(self.urls());
        let builder = match &self.tls {
            None => builder,
            #[cfg(feature = "redis-tls")]
            Some(t) => builder.certs(t.certificates()),
            #[cfg(not(feature = "redis-tls"))]
            Some(_) => panic!("a TLS cluster needs the redis-tls feature"),
        };
        builder
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

/// One standalone server shared by every test of this binary (no
/// persistence). `None` (after the SKIP message) when redis is missing.
pub(crate) fn shared() -> Option<&'static Redis> {
    if !available() {
        return None;
    }
    static SERVER: OnceLock<Redis> = OnceLock::new();
    // Never dropped: the wrapper stops it and removes its directory when
    // the test process exits.
    Some(SERVER.get_or_init(|| Redis::start_with(&["--save", "", "--appendonly", "no"], false)))
}

/// One mutual-TLS server (client certificates required) shared by every
/// test of this binary, and its certificates. `None` (after the SKIP
/// message) when redis is missing. Its certificates' directory stays after
/// the run (a few KB); the server's is removed.
pub(crate) fn shared_tls() -> Option<&'static (Arc<TlsFiles>, Redis)> {
    if !available() {
        return None;
    }
    static SERVER: OnceLock<(Arc<TlsFiles>, Redis)> = OnceLock::new();
    Some(SERVER.get_or_init(|| {
        let files = TlsFiles::generate();
        let server = Redis::start_inner(&["--save", "", "--appendonly", "no"], false, Some(&files));
        (files, server)
    }))
}

/// One cluster shared by every test of this binary. `None` (after the SKIP
/// message) when redis is missing.
pub(crate) fn shared_cluster() -> Option<&'static Cluster> {
    if !available() {
        return None;
    }
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    Some(CLUSTER.get_or_init(|| Cluster::start_inner(false, 0, 5000, None)))
}

/// Fixtures the Redis test files share: the wall clock in ms, fresh ids,
/// records and change sets, and [`Env`](fixtures::Env), a store on the
/// shared server or cluster with a direct look at its keys.
pub(crate) mod fixtures {
    use tower_session_storage::store::{ChangeSet, Items, Record, Timestamp};
    use tower_session_storage::{PublicId, RedisStore, SessionId, SessionStore};

    use super::{unique_prefix, Cluster, Redis};

    /// A store on the shared server or cluster, under a prefix of its own,
    /// and a way to look at and tamper with its keys directly. Test files
    /// add the look-ups they need in `impl Env` blocks of their own.
    pub(crate) struct Env {
        pub(crate) store: RedisStore,
        pub(crate) prefix: String,
        pub(crate) admin: Admin,
    }

    pub(crate) enum Admin {
        Standalone(&'static Redis),
        Cluster(&'static Cluster),
    }

    impl Env {
        /// On the shared standalone server; `None` when Redis is missing
        /// (outside CI).
        pub(crate) async fn standalone() -> Option<Env> {
            let server = super::shared()?;
            let prefix = unique_prefix();
            let store = RedisStore::connect(&server.url())
                .await
                .unwrap()
                .with_key_prefix(prefix.clone());
            Some(Env {
                store,
                prefix,
                admin: Admin::Standalone(server),
            })
        }

        /// On the shared 3-node cluster.
        pub(crate) async fn cluster() -> Option<Env> {
            let cluster = super::shared_cluster()?;
            let prefix = unique_prefix();
            let store = RedisStore::connect_cluster(&cluster.urls())
                .await
                .unwrap()
                .with_key_prefix(prefix.clone());
            Some(Env {
                store,
                prefix,
                admin: Admin::Cluster(cluster),
            })
        }

        /// The documented key of a session: `{prefix}{<id>}`.
        pub(crate) fn key(&self, id: &SessionId) -> String {
            format!("{}{{{id}}}", self.prefix)
        }

        /// Runs a command directly against Redis (blocking; admin only).
        pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
            match self.admin {
                Admin::Standalone(r) => cmd.query(&mut r.admin()).unwrap(),
                Admin::Cluster(c) => cmd.query(&mut c.admin()).unwrap(),
            }
        }

        /// Whether the session's key exists.
        /// The session under `id` as the store loads it now, if any.
        pub(crate) async fn find(&self, id: &SessionId) -> Option<Record> {
            self.store.load(id, Timestamp::now()).await.unwrap()
        }

        /// The session under `id`, which must be there.
        pub(crate) async fn record(&self, id: &SessionId) -> Record {
            self.find(id).await.expect("the session is there")
        }

        pub(crate) fn exists(&self, id: &SessionId) -> bool {
            self.query::<i64>(redis::cmd("EXISTS").arg(self.key(id))) == 1
        }
    }

    /// Now, in ms since the Unix epoch (the clock the store compares with).
    pub(crate) fn now() -> u64 {
        Timestamp::now().as_millis()
    }

    /// The moment `ms` milliseconds after the Unix epoch, as the store
    /// takes it.
    pub(crate) fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// A fresh, well-formed session id.
    pub(crate) fn new_id() -> SessionId {
        uuid::Uuid::new_v4().to_string().parse().unwrap()
    }

    /// A record holding `items`, created now, expiring in `ttl_ms`.
    pub(crate) fn record(items: &[(&str, &str)], ttl_ms: u64) -> Record {
        let t = now();
        Record {
            items: items.iter().copied().collect::<Items>(),
            created_at: at(t),
            expires_at: at(t + ttl_ms),
            public_id: PublicId::generate(),
            meta: tower_session_storage::store::Meta::new(),
        }
    }

    /// A change set that sets `pairs`.
    pub(crate) fn sets(pairs: &[(&str, &str)]) -> ChangeSet {
        let mut c = ChangeSet::new();
        for (k, v) in pairs {
            c.set(k, v);
        }
        c
    }
}
