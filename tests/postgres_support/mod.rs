//! Real PostgreSQL servers for the PostgreSQL tests and bench, on loopback
//! ports.
//!
//! - [`available`] finds Debian's server binaries (`initdb`, `postgres`,
//!   `pg_isready` under `/usr/lib/postgresql/<version>/bin`, or `$PG_BIN`, or
//!   on `PATH`). When they are missing it prints a loud `SKIP` and the test
//!   returns, unless `CI=true`, where it panics: CI must run these tests.
//! - [`Postgres`] is one server with its own cluster (`initdb`) in a temp
//!   dir, listening on a free `127.0.0.1` port (its socket in the temp dir),
//!   stopped by pid when dropped. It can be crashed ([`Postgres::crash`]:
//!   SIGKILL to the postmaster) and restarted on the same data dir and port
//!   ([`Postgres::restart`]).
//! - [`shared`] is one server per test binary, for the tests that only need
//!   *a* PostgreSQL; tests keep apart by table name ([`unique_table`]).
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root: then
//! both run as the `postgres` system user (`runuser -u postgres --`, the temp
//! dir chowned to it). Every server runs under a tiny `sh` wrapper that
//! holds a pipe from the test process on its stdin: when the test process
//! exits, however it exits, the pipe closes, and the wrapper stops the
//! server (fast shutdown) and removes its temp dir.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The wrapper: `$1` the temp dir, `$2` the log file, then the server's
/// command line. Starts the server, prints its pid, waits for stdin to
/// close, stops the server (SIGINT: fast shutdown), waits for it, and
/// removes the temp dir unless `$1/keep` exists (a restart is coming).
const WRAPPER: &str = r#"dir=$1; log=$2; shift 2
"$@" >>"$log" 2>&1 & pid=$!
echo "$pid"
read -r _ignored
kill -INT "$pid" 2>/dev/null
wait "$pid"
if [ ! -e "$dir/keep" ]; then rm -rf "$dir"; fi
"#;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The directory holding `initdb`, `postgres` and `pg_isready`.
fn bin_dir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "postgres", "pg_isready"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(d) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return has_all(&d).then_some(d);
    }
    // Debian: /usr/lib/postgresql/<version>/bin, the newest version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    find_on_path("initdb")
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| has_all(d))
}

fn is_root() -> bool {
    // The crate forbids unsafe code, so no geteuid(): ask the shell.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Whether the PostgreSQL server binaries are installed. When they are not:
/// panics under `CI=true`, otherwise prints a loud SKIP and returns false
/// (the test then returns without checking anything).
pub(crate) fn available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| bin_dir().is_some());
    if !found {
        if in_ci() {
            panic!(
                "PostgreSQL server binaries (initdb, postgres, pg_isready) not found, and CI=true: \
                 the PostgreSQL tests must run in CI. Install them (apt-get install postgresql)"
            );
        }
        static BANNER: std::sync::Once = std::sync::Once::new();
        BANNER.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\n\
                 ************************************************************************\n\
                 SKIP: PostgreSQL server binaries not found; install them\n\
                 (apt-get install postgresql) to run the PostgreSQL tests\n\
                 ************************************************************************\n"
            );
        });
    }
    found
}

/// A fresh table name, so tests sharing a server never see each other's rows.
pub(crate) fn unique_table() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cmd` as the `postgres` system user when we are root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// One running postmaster under the wrapper.
struct Proc {
    sh: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
}

impl Proc {
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
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status();
    }

    /// Closes the wrapper's stdin (it stops the server) and waits for it.
    fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.sh.wait();
    }
}

/// A PostgreSQL server on `127.0.0.1:<port>` with its own cluster.
pub(crate) struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Postgres {
    /// `initdb` a cluster in a new temp dir and start a server on a free
    /// port. `None` (after the loud SKIP) when the binaries are missing.
    pub(crate) fn start() -> Option<Postgres> {
        if !available() {
            return None;
        }
        let bin = bin_dir()?;
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tss-pg-{}-{}-{:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(
                ok,
                "chown postgres {} (is there a postgres user?)",
                dir.display()
            );
        }
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            bin,
            dir,
            port: free_port(),
            proc: None,
        };
        pg.launch();
        Some(pg)
    }

    fn spawn(&self) -> Proc {
        let mut cmd = as_server_user(Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .arg(&self.dir)
            .arg(self.dir.join("log"))
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=300"])
            // Test clusters: no durability across OS crashes (fsync off),
            // but every commit is written to the kernel before it is
            // acknowledged (synchronous_commit stays on), so a SIGKILL of
            // the server keeps everything committed.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut sh = cmd.spawn().expect("spawn sh for postgres");
        let mut line = String::new();
        BufReader::new(sh.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid = line.trim().parse().expect("the wrapper prints the pid");
        Proc {
            stdin: sh.stdin.take(),
            sh,
            pid,
        }
    }

    /// Starts the server and waits until it accepts connections. After a
    /// crash, the old server's backends may hold on to its shared memory
    /// for a moment: a start refused for that is retried.
    fn launch(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let proc = self.spawn();
            loop {
                if self.ready() {
                    self.proc = Some(proc);
                    return;
                }
                if proc.exited() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "postgres did not start: {}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            // It exited: keep the dir for the next try.
            std::fs::write(self.dir.join("keep"), b"").unwrap();
            proc.stop();
            let _ = std::fs::remove_file(self.dir.join("keep"));
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                "1",
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, |p| p.pid)
    }

    /// SIGKILLs the postmaster and waits until it is gone. The data dir
    /// stays for [`restart`](Self::restart).
    pub(crate) fn crash(&mut self) {
        let Some(proc) = self.proc.take() else { return };
        proc.signal("KILL");
        while !proc.exited() {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::write(self.dir.join("keep"), b"").unwrap();
        proc.stop();
        let _ = std::fs::remove_file(self.dir.join("keep"));
    }

    /// Starts the server again on the same data dir and port (crash
    /// recovery replays the WAL), and waits until it accepts connections.
    pub(crate) fn restart(&mut self) {
        assert!(self.proc.is_none(), "restart after crash");
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        match self.proc.take() {
            // The wrapper stops the server and removes the dir.
            Some(proc) => proc.stop(),
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// One server per test binary (never dropped: its wrapper stops it and
/// removes its dir when the test process exits).
pub(crate) fn shared() -> Option<&'static Postgres> {
    if !available() {
        return None;
    }
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    Some(SERVER.get_or_init(|| Postgres::start().expect("available")))
}
