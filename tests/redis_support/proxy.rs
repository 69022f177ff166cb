//! [`CountingProxy`]: a TCP proxy that counts the commands a client sends.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Counting proxy
// ---------------------------------------------------------------------------

/// What cuts a connection: a pattern, and how many commands holding it
/// still go through first.
type Cut = std::sync::Mutex<Option<(Vec<u8>, usize)>>;

/// A TCP proxy on `127.0.0.1:<random port>` in front of a server, counting
/// the commands (RESP arrays) the clients send through it, and the round
/// trips: the bursts of commands a client sends after an answer (a
/// pipeline is one). It can also cut a connection when a command holding
/// some bytes comes through ([`cut_on`](Self::cut_on)): that command and
/// the ones after it on the connection never reach the server.
pub(crate) struct CountingProxy {
    port: u16,
    commands: Arc<AtomicUsize>,
    round_trips: Arc<AtomicUsize>,
    cut: Arc<Cut>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub(crate) async fn start(upstream_port: u16) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(AtomicUsize::new(0));
        let round_trips = Arc::new(AtomicUsize::new(0));
        let cut: Arc<Cut> = Arc::default();
        let (counter, trips, cutter) = (commands.clone(), round_trips.clone(), cut.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (counter, trips, cutter) = (counter.clone(), trips.clone(), cutter.clone());
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let answered = Arc::new(std::sync::atomic::AtomicBool::new(true));
                    let flag = answered.clone();
                    let down = tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            flag.store(true, Ordering::SeqCst);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                    let counts = Counts {
                        commands: &counter,
                        round_trips: &trips,
                        answered: &answered,
                        cut: &cutter,
                    };
                    forward_counting(&mut cr, &mut sw, counts).await;
                    down.abort();
                });
            }
        });
        CountingProxy {
            port,
            commands,
            round_trips,
            cut,
            task,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Commands sent through the proxy so far.
    pub(crate) fn commands(&self) -> usize {
        self.commands.load(Ordering::SeqCst)
    }

    /// Round trips so far: bursts of commands a client sent after it got
    /// an answer (or first on its connection). A pipeline, or commands
    /// sent together on a multiplexed connection, count once.
    pub(crate) fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// From now on, a command holding `pattern` cuts its connection: it
    /// and everything after it on that connection are dropped. `None`
    /// stops cutting.
    pub(crate) fn cut_on(&self, pattern: Option<&[u8]>) {
        *self.cut.lock().unwrap() = pattern.map(|p| (p.to_vec(), 0));
    }

    /// As [`cut_on`](Self::cut_on), but the first `skip` commands holding
    /// `pattern` go through.
    pub(crate) fn cut_on_after(&self, pattern: &[u8], skip: usize) {
        *self.cut.lock().unwrap() = Some((pattern.to_vec(), skip));
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Counts<'a> {
    commands: &'a AtomicUsize,
    round_trips: &'a AtomicUsize,
    answered: &'a std::sync::atomic::AtomicBool,
    cut: &'a Cut,
}

async fn forward_counting(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counts: Counts<'_>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if pending.is_empty() && counts.answered.swap(false, Ordering::SeqCst) {
            counts.round_trips.fetch_add(1, Ordering::SeqCst);
        }
        pending.extend_from_slice(&buf[..n]);
        // Count every complete command before forwarding it, so a reply
        // can never arrive before its command was counted.
        let mut out = Vec::new();
        while let Some(len) = resp_command_len(&pending) {
            let cmd: Vec<u8> = pending.drain(..len).collect();
            let cut_now = match &mut *counts.cut.lock().unwrap() {
                Some((p, skip)) if cmd.windows(p.len()).any(|w| w == p.as_slice()) => {
                    if *skip == 0 {
                        true
                    } else {
                        *skip -= 1;
                        false
                    }
                }
                _ => false,
            };
            if cut_now {
                let _ = to.write_all(&out).await;
                return;
            }
            counts.commands.fetch_add(1, Ordering::SeqCst);
            out.extend_from_slice(&cmd);
        }
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The length of the first complete RESP command (`*N` then `N` bulk
/// strings) in `b`, or `None` when it is not complete yet.
fn resp_command_len(b: &[u8]) -> Option<usize> {
    fn line(b: &[u8], at: usize) -> Option<(i64, usize)> {
        let end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(&b[at + 1..end]).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    if b.first()? != &b'*' {
        // Inline command: one line.
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        return Some(end + 2);
    }
    let (n, mut at) = line(b, 0)?;
    for _ in 0..n {
        let (len, start) = line(b, at)?;
        at = start + len as usize + 2;
        if at > b.len() {
            return None;
        }
    }
    Some(at)
}

#[test]
fn resp_command_len_counts_whole_commands_only() {
    let cmd = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
    assert_eq!(resp_command_len(cmd), Some(cmd.len()));
    assert_eq!(resp_command_len(&cmd[..cmd.len() - 1]), None);
    assert_eq!(resp_command_len(b"PING\r\n"), Some(6));
    let mut two = cmd.to_vec();
    two.extend_from_slice(cmd);
    assert_eq!(resp_command_len(&two), Some(cmd.len()));
}
