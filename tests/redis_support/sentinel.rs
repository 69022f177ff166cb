//! Redis Sentinel on loopback: a primary and a replica (both with an AOF)
//! and three sentinels
//! (`redis-server <conf> --sentinel`, with a config file written into the
//! sentinel's temp dir), quick to fail over: `down-after-milliseconds`
//! 1000, `failover-timeout` 4000, quorum 2.
//!
//! The data nodes may require a password ([`SentinelSet::start_with`]); the
//! sentinels then know it (`sentinel auth-pass`), and may require one of
//! their own.
//!
//! With TLS ([`SentinelSet::start_tls`]) the data nodes serve TLS only
//! (`--port 0 --tls-port …`, replication over TLS: `--tls-replication
//! yes`). The sentinels talk TLS to them and to each other (`tls-replication
//! yes` in the sentinel's config: Redis 7 sentinels then use TLS for every
//! link they open, and announce their `tls-port` to the other sentinels),
//! and listen both on a plain `port` and on a `tls-port` for clients:
//! [`SentinelSet::sentinel_urls`] are `redis://`, and
//! [`SentinelSet::sentinel_tls_urls`] `rediss://`, to the same sentinels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, temp_dir, Redis, TlsFiles};

/// The master name the sentinels monitor.
pub(crate) const MASTER: &str = "sessions";

/// Passwords for a [`SentinelSet`].
#[derive(Clone, Default)]
pub(crate) struct Auth {
    /// `requirepass` (and `masterauth`) of the primary and the replica.
    pub(crate) data: Option<String>,
    /// `requirepass` of the sentinels.
    pub(crate) sentinel: Option<String>,
}

/// A primary (node 0 at the start), a replica (node 1) and three sentinels.
pub(crate) struct SentinelSet {
    nodes: Vec<Redis>,
    sentinels: Vec<Redis>,
    auth: Auth,
    /// Data nodes serve TLS only with these certificates, and the
    /// sentinels talk TLS to them.
    tls: Option<Arc<TlsFiles>>,
    /// The sentinels' TLS ports (with `tls`), in the order of `sentinels`.
    sentinel_tls_ports: Vec<u16>,
}

impl SentinelSet {
    /// No passwords.
    pub(crate) fn start() -> SentinelSet {
        Self::start_with(Auth::default())
    }

    /// Ready once the replica has synced and every sentinel knows the
    /// replica and the two other sentinels (so a failover can start at
    /// once).
    pub(crate) fn start_with(auth: Auth) -> SentinelSet {
        Self::start_inner(auth, None)
    }

    /// Over TLS, with the certificates of `tls` (no passwords): see the
    /// module docs. Clients need a client certificate (Redis's default
    /// `tls-auth-clients yes`), on the data nodes and on the sentinels'
    /// TLS ports.
    pub(crate) fn start_tls(tls: &Arc<TlsFiles>) -> SentinelSet {
        Self::start_inner(Auth::default(), Some(tls))
    }

    fn start_inner(auth: Auth, tls: Option<&Arc<TlsFiles>>) -> SentinelSet {
        // Persistence on (AOF, fsynced on every write): a primary without
        // it that is restarted comes back empty, and Redis's replication
        // docs warn that replicas may then sync that empty data set. The
        // soak restarts old primaries.
        let mut data_args = vec![
            "--repl-diskless-sync-delay",
            "0",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ];
        if let Some(p) = &auth.data {
            data_args.extend(["--requirepass", p, "--masterauth", p]);
        }
        if tls.is_some() {
            data_args.extend(["--tls-replication", "yes"]);
        }
        let start = |args: &[&str]| match tls {
            None => Redis::start_args(args),
            Some(t) => Redis::start_tls(t, args),
        };
        let primary = start(&data_args);
        let port = primary.port().to_string();
        let mut replica_args = data_args.clone();
        replica_args.extend(["--replicaof", "127.0.0.1", &port]);
        let replica = start(&replica_args);
        let mut set = SentinelSet {
            nodes: vec![primary, replica],
            sentinels: Vec::new(),
            auth,
            tls: tls.cloned(),
            sentinel_tls_ports: Vec::new(),
        };
        set.wait_until(30, "the replica never synced", |s| {
            s.info(1, "replication")
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        for _ in 0..3 {
            let (s, tls_port) = set.start_sentinel();
            set.sentinels.push(s);
            set.sentinel_tls_ports.extend(tls_port);
        }
        set.wait_until(30, "the sentinels never saw each other", |s| {
            (0..3).all(|i| {
                s.sentinel_master(i).is_some_and(|m| {
                    m.contains("\nnum-other-sentinels\n2\n") && m.contains("\nnum-slaves\n1\n")
                })
            })
        });
        set
    }

    /// A sentinel, ready (it answers on its plain port), and its TLS port
    /// (with TLS).
    fn start_sentinel(&self) -> (Redis, Option<u16>) {
        let primary = self.nodes[0].port();
        let mut last = String::new();
        for _ in 0..10 {
            let port = free_port();
            let dir = temp_dir(&format!("s{port}"));
            let mut conf = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile redis.log\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 4000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.display()
            );
            let mut tls_port = None;
            if let Some(t) = &self.tls {
                let p = free_port();
                if p == port {
                    continue;
                }
                tls_port = Some(p);
                // The server certificate is also the sentinel's client
                // certificate towards the data nodes and the other
                // sentinels (it has no extended key usage).
                conf.push_str(&format!(
                    "tls-port {p}\ntls-replication yes\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\n",
                    t.server_cert.display(),
                    t.server_key.display(),
                    t.ca.display()
                ));
            }
            if let Some(p) = &self.auth.data {
                conf.push_str(&format!("sentinel auth-pass {MASTER} {p}\n"));
            }
            if let Some(p) = &self.auth.sentinel {
                conf.push_str(&format!("requirepass {p}\n"));
            }
            let file = dir.join("sentinel.conf");
            std::fs::write(&file, conf).unwrap();
            let mut r = Redis {
                port,
                dir,
                args: vec![file.to_str().unwrap().to_owned(), "--sentinel".to_owned()],
                proc: None,
                owns_dir: true,
                tls: None,
            };
            match r.launch() {
                Ok(()) => return (r, tls_port),
                Err(e) => last = e,
            }
        }
        panic!("could not start a sentinel after 10 tries: {last}");
    }

    fn wait_until(&self, secs: u64, what: &str, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !ok(self) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sentinels' URLs (without their password).
    pub(crate) fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Redis::url).collect()
    }

    /// The sentinels' TLS URLs (`rediss://`), with TLS; none without.
    pub(crate) fn sentinel_tls_urls(&self) -> Vec<String> {
        self.sentinel_tls_ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    pub(crate) fn nodes(&self) -> &[Redis] {
        &self.nodes
    }

    pub(crate) fn nodes_mut(&mut self) -> &mut [Redis] {
        &mut self.nodes
    }

    pub(crate) fn sentinels_mut(&mut self) -> &mut [Redis] {
        &mut self.sentinels
    }

    /// A blocking connection to `r` (over TLS when it serves TLS), logged
    /// in with `password`; `None` when it does not answer within 2 s.
    fn connect(r: &Redis, password: Option<&str>) -> Option<redis::Connection> {
        let mut url = r.url();
        if let Some(p) = password {
            url = url.replacen("://", &format!("://:{p}@"), 1);
        }
        let client = match &r.tls {
            None => redis::Client::open(url).ok()?,
            #[cfg(feature = "redis-tls")]
            Some(t) => redis::Client::build_with_tls(url, t.certificates()).ok()?,
            #[cfg(not(feature = "redis-tls"))]
            Some(_) => panic!("a TLS server needs the redis-tls feature"),
        };
        let c = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        Some(c)
    }

    /// A connection to data node `i` (logged in), if it answers.
    pub(crate) fn node_conn(&self, i: usize) -> Option<redis::Connection> {
        if !self.nodes[i].is_running() {
            return None;
        }
        Self::connect(&self.nodes[i], self.auth.data.as_deref())
    }

    /// `INFO <section>` of data node `i`, if it answers.
    pub(crate) fn info(&self, i: usize, section: &str) -> Option<String> {
        redis::cmd("INFO")
            .arg(section)
            .query(&mut self.node_conn(i)?)
            .ok()
    }

    /// The role data node `i` reports (`master`, `slave`), if it answers.
    pub(crate) fn role(&self, i: usize) -> Option<String> {
        let v: Vec<redis::Value> = redis::cmd("ROLE").query(&mut self.node_conn(i)?).ok()?;
        match v.first()? {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// `SENTINEL MASTER <name>` of sentinel `i` as `\nfield\nvalue\n…`.
    fn sentinel_master(&self, i: usize) -> Option<String> {
        let s = &self.sentinels[i];
        if !s.is_running() {
            return None;
        }
        let mut c = Self::connect(s, self.auth.sentinel.as_deref())?;
        let fields: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(MASTER)
            .query(&mut c)
            .ok()?;
        Some(format!("\n{}\n", fields.join("\n")))
    }

    /// The data node the sentinels (a majority of the running ones) name
    /// as the primary.
    pub(crate) fn named_primary(&self) -> Option<usize> {
        let mut votes = [0; 2];
        let mut running = 0;
        for (i, s) in self.sentinels.iter().enumerate() {
            if !s.is_running() {
                continue;
            }
            running += 1;
            let port = self.sentinel_master(i).and_then(|m| {
                m.split("\nport\n")
                    .nth(1)?
                    .lines()
                    .next()?
                    .parse::<u16>()
                    .ok()
            });
            if let Some(n) = self.nodes.iter().position(|n| Some(n.port()) == port) {
                votes[n] += 1;
            }
        }
        (0..2).find(|&n| votes[n] * 2 > running)
    }

    /// Waits until the sentinels name node `to` as the primary and it says
    /// so itself.
    pub(crate) fn wait_primary(&self, to: usize, secs: u64) {
        self.wait_until(secs, "the sentinels never promoted the replica", |s| {
            s.named_primary() == Some(to) && s.role(to).as_deref() == Some("master")
        });
    }

    /// Starts crashed data node `i` again as a replica of the other node,
    /// as its config file would say after the sentinels rewrote it (these
    /// nodes have none, so `CONFIG REWRITE` cannot).
    pub(crate) fn restart_as_replica(&mut self, i: usize) {
        let port = self.nodes[1 - i].port().to_string();
        let node = &mut self.nodes[i];
        if let Some(at) = node.args.iter().position(|a| a == "--replicaof") {
            node.args.drain(at..at + 3);
        }
        node.args
            .extend(["--replicaof".to_owned(), "127.0.0.1".to_owned(), port]);
        node.restart();
    }

    /// Waits until data node `i` is a replica with its link to the primary
    /// up.
    pub(crate) fn wait_replica(&self, i: usize, secs: u64) {
        self.wait_until(secs, "the old primary never became a replica", |s| {
            s.role(i).as_deref() == Some("slave")
                && s.info(i, "replication")
                    .is_some_and(|r| r.contains("master_link_status:up"))
        });
    }

    /// How many failovers the sentinels have made so far (`+switch-master`
    /// in the log of the first sentinel that runs).
    pub(crate) fn failovers(&self) -> usize {
        self.sentinels
            .iter()
            .find(|s| s.is_running())
            .map_or(0, |s| s.log().matches("+switch-master").count())
    }

    /// How many times clients ran `command` on data node `i` since it
    /// started (`INFO commandstats`; replicated writes do not count).
    pub(crate) fn calls(&self, i: usize, command: &str) -> u64 {
        let stats = self.info(i, "commandstats").unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}
