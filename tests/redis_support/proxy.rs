//! [`CountingProxy`]: a TCP proxy that counts the commands a client sends.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------------------
// Counting proxy
// ---------------------------------------------------------------------------

/// A TCP proxy on `127.0.0.1:<random port>` in front of a server, counting
/// the commands (RESP arrays) the clients send through it.
pub(crate) struct CountingProxy {
    port: u16,
    commands: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub(crate) async fn start(upstream_port: u16) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(AtomicUsize::new(0));
        let counter = commands.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                    else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    forward_counting(&mut cr, &mut sw, &counter).await;
                    down.abort();
                });
            }
        });
        CountingProxy {
            port,
            commands,
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
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward_counting(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicUsize,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        // Count every complete command before forwarding the bytes, so a
        // reply can never arrive before its command was counted.
        while let Some(len) = resp_command_len(&pending) {
            counter.fetch_add(1, Ordering::SeqCst);
            pending.drain(..len);
        }
        if to.write_all(&buf[..n]).await.is_err() {
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
