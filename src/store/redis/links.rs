//! The link index of [`RedisStore`]: the index step a linking write runs
//! first, and the registry's reads and ends (`list`, `end_linked`,
//! `end_public`), each a fixed number of batched round trips. The layout,
//! the order of the steps and what is atomic are in the
//! [module docs](super#links-and-the-registry).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use super::conn::{map_err, redis_kind, Conn};
use super::hash::{clamp, decode_links, duration_millis, parse_millis, LINKS_FIELD};
use super::hash::{CREATED_FIELD, IDLE_FIELD, PERSIST_FIELD, PUBLIC_FIELD};
use super::hash::{OLD_CREATED_FIELD, OLD_PUBLIC_FIELD};
use super::scripts::{Lua, Ready, ENDED, SCRIPTS};
use super::RedisStore;
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{Keep, Listed, Meta, Timestamp};

/// One command of a batch: a plain command, or a script with its keys and
/// arguments (sent as `EVALSHA`).
pub(super) enum Op {
    Cmd(Cmd),
    Lua(&'static Lua, Vec<Vec<u8>>, Vec<Vec<u8>>),
}

impl Op {
    fn lua(lua: &'static Lua, key: Vec<u8>, args: Vec<Vec<u8>>) -> Op {
        Op::Lua(lua, vec![key], args)
    }

    fn evalsha(&self) -> Cmd {
        match self {
            Op::Cmd(c) => c.clone(),
            Op::Lua(lua, keys, args) => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&lua.sha).arg(keys.len());
                for k in keys {
                    cmd.arg(k);
                }
                for a in args {
                    cmd.arg(a);
                }
                cmd
            }
        }
    }
}

/// Polls every future of `futs` together; their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn bytes(s: impl ToString) -> Vec<u8> {
    s.to_string().into_bytes()
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A session as a survey of the index found it.
enum State {
    /// Live and linked as asked.
    Linked(Listed),
    /// Not found where its pointer names (ended, expired, or in the middle
    /// of a move on Cluster).
    Absent,
    /// Live or expired, but not (or no longer) linked as asked.
    Other,
}

/// One index entry, surveyed.
struct Entry {
    public_id: PublicId,
    /// Where its move pointer named it (`None`: no pointer, or a mark).
    at: Option<SessionId>,
    state: State,
}

impl RedisStore {
    /// The key of the index of the link `name = value`:
    /// `{prefix}link:<name>:{<value>}`, a sorted set of public ids.
    pub(super) fn index_key(&self, name: &str, value: &str) -> Vec<u8> {
        format!("{}link:{name}:{{{value}}}", self.prefix).into_bytes()
    }

    /// The key of the note a cluster `cycle` leaves when it takes a session
    /// from `id`: `{prefix}taken:{<id>}` (the session's slot), holding the
    /// public id, for a few seconds.
    pub(super) fn taken_key(&self, id: &SessionId) -> Vec<u8> {
        format!("{}taken:{{{}}}", self.prefix, id.encode().as_str()).into_bytes()
    }

    /// How long after the index step began the session step of a linking
    /// write may still be applied: the two steps, each within its bound.
    /// A later session step is refused by its script.
    pub(super) fn link_window(&self) -> Duration {
        self.step_bound() * 2
    }

    /// How old an index entry's latest write must be before it may be
    /// pruned: the [`link_window`](Self::link_window), plus 2 s for the
    /// app's and Redis's clocks.
    pub(super) fn prune_grace(&self) -> Duration {
        self.link_window() + Duration::from_secs(2)
    }

    /// Sends `ops` as one batch: one pipeline on a standalone server; on a
    /// cluster, all at once on the multiplexed connections (so one round
    /// trip per node). One result per op; a connection failure fails all.
    pub(super) async fn many(
        &self,
        ops: &[Op],
    ) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(self.conn, Conn::Cluster(_)) {
            let futs = ops.iter().map(|op| async move {
                match op {
                    Op::Cmd(c) => self.write(c).await,
                    Op::Lua(lua, keys, args) => {
                        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                        self.eval(lua, &keys, |cmd| {
                            for a in args {
                                cmd.arg(a);
                            }
                        })
                        .await
                    }
                }
            });
            let out = join_all(futs.collect()).await;
            // A failure to reach the cluster fails the batch.
            for r in &out {
                if let Err(e) = r {
                    if e.kind() == crate::StoreErrorKind::Unavailable {
                        return Err(e.clone());
                    }
                }
            }
            return Ok(out);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for op in ops {
            pipe.add_command(op.evalsha());
        }
        let ack = self.ack;
        if let Some(a) = ack {
            pipe.cmd("WAIT")
                .arg(a.replicas)
                .arg(a.timeout.as_millis().max(1) as u64);
        }
        let mut replies = self.run_for_pipe(&pipe).await?;
        let no_script = replies.iter().any(|v| {
            matches!(v, Value::ServerError(e) if redis_kind(&map_err(e.clone().into()))
                == Some(ErrorKind::Server(ServerErrorKind::NoScript)))
        });
        if no_script {
            self.preload_scripts().await;
            replies = self.run_for_pipe(&pipe).await?;
        }
        if let Some(a) = ack {
            match replies.pop() {
                Some(Value::Int(n)) if n >= 0 && n as u64 >= a.replicas as u64 => {}
                other => {
                    return Err(StoreError::unavailable(format!(
                        "too few replicas acknowledged a session write within {:?} \
                         (RedisStore::with_replica_ack): {}",
                        a.timeout,
                        match &other {
                            Some(Value::Int(n)) => format!("{n} acknowledged"),
                            Some(v) => super::ops::reply_type(v).to_owned(),
                            None => "no reply".to_owned(),
                        }
                    )))
                }
            }
        }
        Ok(replies
            .into_iter()
            .map(|v| match v {
                Value::ServerError(e) => Err(map_err(e.into())),
                v => Ok(v),
            })
            .collect())
    }

    async fn run_for_pipe(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, StoreError> {
        self.run_for(self.step_bound(), self.conn.query_pipe(pipe))
            .await
    }

    /// The index step of a linking write, before its session step: adds
    /// (or refreshes) the session's entry in the index of each of `links`,
    /// and points its move pointer at `id` (unless `id` is `None`: a
    /// cluster `cycle` points it itself), each made to live at least until
    /// `horizon`. `force` overwrites a pointer naming another id (a new
    /// session's public id is fresh, so that is garbage).
    ///
    /// `Ok(None)` when the pointer says the session is being ended or was
    /// moved away from `id`: the write is then [gone](crate::store::SaveOutcome::Gone).
    pub(super) async fn index_step<'a>(
        &self,
        public_id: &PublicId,
        id: Option<&SessionId>,
        links: impl Iterator<Item = (&'a str, &'a str)>,
        horizon: u64,
        force: bool,
    ) -> Result<Option<Ready>, StoreError> {
        let began = clamp(Timestamp::now());
        let pid = bytes(public_id);
        let mut ops: Vec<Op> = links
            .map(|(n, v)| {
                Op::lua(
                    &SCRIPTS.index,
                    self.index_key(n, v),
                    vec![pid.clone(), bytes(began), bytes(horizon)],
                )
            })
            .collect();
        if let Some(id) = id {
            ops.push(Op::lua(
                &SCRIPTS.pin,
                self.pointer_key(public_id),
                vec![
                    bytes(id.encode().as_str()),
                    bytes(horizon),
                    bytes(if force { "1" } else { "0" }),
                ],
            ));
        }
        let replies = self.many(&ops).await?;
        let mut pinned = true;
        for (op, r) in ops.iter().zip(replies) {
            let v = r?;
            if matches!(op, Op::Lua(l, ..) if std::ptr::eq(*l, &SCRIPTS.pin)) {
                pinned = matches!(v, Value::Int(1));
            }
        }
        Ok(pinned.then(|| Ready {
            deadline: began + duration_millis(self.link_window()),
            horizon,
        }))
    }

    /// After a write's session step: takes `public_id` out of the indexes
    /// of `links` (links it dropped, or all of them when the session was
    /// deleted), unless an entry was written within the
    /// [grace](Self::prune_grace) of `sent` (a concurrent write may have
    /// linked it again). Best effort: what stays is pruned later.
    pub(super) async fn unindex(
        &self,
        public_id: &PublicId,
        links: &[(String, String)],
        sent: Timestamp,
    ) {
        if links.is_empty() {
            return;
        }
        let cutoff = clamp(sent.saturating_sub(self.prune_grace()));
        let ops: Vec<Op> = links
            .iter()
            .map(|(n, v)| {
                Op::lua(
                    &SCRIPTS.prune,
                    self.index_key(n, v),
                    vec![bytes(cutoff), bytes(public_id)],
                )
            })
            .collect();
        if let Err(e) = self.many(&ops).await {
            tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not unindex links; pruned later");
        }
    }

    /// Reads the index of `name = value` and every session in it: three
    /// round trips (the index; the pointers; the sessions), each one batch.
    async fn survey(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut zrange = redis::cmd("ZRANGE");
        zrange.arg(self.index_key(name, value)).arg(0).arg(-1);
        let members = match self.run(self.conn.query(&zrange)).await {
            Ok(Value::Array(m)) => m,
            Ok(_) => Vec::new(),
            Err(e) if super::conn::redis_code(&e) == Some("WRONGTYPE") => Vec::new(),
            Err(e) => return Err(e),
        };
        let pids: Vec<PublicId> = members
            .iter()
            .filter_map(|m| std::str::from_utf8(text(m)?).ok()?.parse().ok())
            .collect();
        let ats = self.pointers(&pids).await?;
        let ops: Vec<Op> = ats
            .iter()
            .flatten()
            .flat_map(|at| {
                let key = self.key(at);
                let mut cmd = redis::cmd("HMGET");
                cmd.arg(&key).arg(CREATED_FIELD).arg(PUBLIC_FIELD);
                cmd.arg(LINKS_FIELD).arg(IDLE_FIELD).arg(PERSIST_FIELD);
                cmd.arg(OLD_CREATED_FIELD).arg(OLD_PUBLIC_FIELD);
                let mut ttl = redis::cmd("PEXPIRETIME");
                ttl.arg(key);
                [Op::Cmd(cmd), Op::Cmd(ttl)]
            })
            .collect();
        let mut hashes = self.many_reads(&ops).await?.into_iter();
        Ok(pids
            .into_iter()
            .zip(ats)
            .map(|(public_id, at)| {
                let state = match at {
                    None => State::Absent,
                    Some(_) => match (hashes.next(), hashes.next()) {
                        (Some(Ok(Value::Array(f))), Some(Ok(Value::Int(e)))) => {
                            judge(&public_id, &f, e, name, value, now)
                        }
                        _ => State::Absent,
                    },
                };
                Entry {
                    public_id,
                    at,
                    state,
                }
            })
            .collect())
    }

    /// Where each move pointer names its session (`None`: no pointer, an
    /// `ended` mark, or junk). One batch.
    async fn pointers(&self, pids: &[PublicId]) -> Result<Vec<Option<SessionId>>, StoreError> {
        let ops: Vec<Op> = pids
            .iter()
            .map(|p| {
                let mut cmd = redis::cmd("GET");
                cmd.arg(self.pointer_key(p));
                Op::Cmd(cmd)
            })
            .collect();
        Ok(self
            .many_reads(&ops)
            .await?
            .into_iter()
            .map(|r| {
                let v = r.ok()?;
                SessionId::parse_bytes(text(&v)?)
            })
            .collect())
    }

    /// [`many`](Self::many) for reads: no replica acknowledgement.
    async fn many_reads(&self, ops: &[Op]) -> Result<Vec<Result<Value, StoreError>>, StoreError> {
        if self.ack.is_none() {
            return self.many(ops).await;
        }
        let this = Self {
            ack: None,
            ..self.clone()
        };
        this.many(ops).await
    }

    /// Prunes the entries of `entries` that are not linked sessions:
    /// re-reads their pointers (one batch) and removes, in one script on
    /// the index, those whose pointer did not change meanwhile (a move on
    /// a standalone server changes it in the same script that moves the
    /// session), that a Cluster move is not carrying (no `taken` note
    /// under the id their pointer names), and whose latest index write is
    /// older than `cutoff` (so no linking write of theirs can still land).
    async fn prune(
        &self,
        name: &str,
        value: &str,
        entries: &[&Entry],
        cutoff: u64,
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        // One batch: each pointer again, and for each session not found,
        // whether a Cluster `cycle` has just taken it (its note).
        let mut ops: Vec<Op> = Vec::new();
        for e in entries {
            let mut get = redis::cmd("GET");
            get.arg(self.pointer_key(&e.public_id));
            ops.push(Op::Cmd(get));
            if let Some(at) = &e.at {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(self.taken_key(at));
                ops.push(Op::Cmd(exists));
            }
        }
        let mut replies = self.many_reads(&ops).await?.into_iter();
        let mut args = vec![bytes(cutoff)];
        for e in entries {
            let again = match replies.next() {
                Some(Ok(v)) => text(&v).and_then(SessionId::parse_bytes),
                _ => continue,
            };
            let moving = match e.at {
                Some(_) => !matches!(replies.next(), Some(Ok(Value::Int(0)))),
                None => false,
            };
            if again == e.at && !moving {
                args.push(bytes(e.public_id));
            }
        }
        if args.len() > 1 {
            let op = Op::lua(&SCRIPTS.prune, self.index_key(name, value), args);
            self.many(&[op]).await?.into_iter().next().transpose()?;
        }
        Ok(())
    }

    pub(super) async fn list_now(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        let began = Timestamp::now();
        let entries = self.survey(name, value, now).await?;
        let cutoff = clamp(began.saturating_sub(self.prune_grace()));
        let stale: Vec<&Entry> = entries
            .iter()
            .filter(|e| !matches!(e.state, State::Linked(_)))
            .collect();
        if let Err(e) = self.prune(name, value, &stale, cutoff).await {
            tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not prune a link index");
        }
        let listed = entries
            .into_iter()
            .filter_map(|e| match e.state {
                State::Linked(l) => Some(l),
                _ => None,
            })
            .collect();
        Ok(Listed::newest(listed, limit))
    }

    pub(super) async fn end_linked_now(
        &self,
        name: &str,
        value: &str,
        keep: Keep,
    ) -> Result<usize, StoreError> {
        let began = Timestamp::now();
        let entries = self.survey(name, value, Timestamp::UNIX_EPOCH).await?;
        // Linked sessions, and those not found where their pointer names
        // (on Cluster, possibly in the middle of a move: ending them marks
        // the pointer, which stops the move).
        let mut found: Vec<(Timestamp, PublicId)> = entries
            .iter()
            .filter_map(|e| match &e.state {
                State::Linked(l) => Some((l.created_at, e.public_id)),
                State::Absent if e.at.is_some() => Some((Timestamp::UNIX_EPOCH, e.public_id)),
                _ => None,
            })
            .collect();
        let victims = keep.victims(&mut found);
        // The survey found these linked so: no need to check again.
        let (ended, links) = self.end_all_public(&victims, false).await?;
        // Their entries, in this index and the others they were in.
        let mut ops: Vec<Op> = Vec::new();
        if !victims.is_empty() {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(self.index_key(name, value));
            for p in &victims {
                zrem.arg(bytes(p));
            }
            ops.push(Op::Cmd(zrem));
        }
        for (p, n, v) in &links {
            if (n.as_str(), v.as_str()) != (name, value) {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(self.index_key(n, v)).arg(bytes(p));
                ops.push(Op::Cmd(zrem));
            }
        }
        if let Err(e) = self.many(&ops).await {
            tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not unindex ended sessions; pruned later");
        }
        let cutoff = clamp(began.saturating_sub(self.prune_grace()));
        let stale: Vec<&Entry> = entries
            .iter()
            .filter(|e| !matches!(e.state, State::Linked(_)) && !victims.contains(&e.public_id))
            .collect();
        if let Err(e) = self.prune(name, value, &stale, cutoff).await {
            tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not prune a link index");
        }
        Ok(ended)
    }

    pub(super) async fn end_public_now(&self, public_id: &PublicId) -> Result<bool, StoreError> {
        let (ended, links) = self
            .end_all_public(std::slice::from_ref(public_id), true)
            .await?;
        let ops: Vec<Op> = links
            .iter()
            .map(|(p, n, v)| {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(self.index_key(n, v)).arg(bytes(p));
                Op::Cmd(zrem)
            })
            .collect();
        if let Err(e) = self.many(&ops).await {
            tracing::debug!(error = %crate::error::Chain(&e), "RedisStore: could not unindex an ended session; pruned later");
        }
        Ok(ended > 0)
    }

    /// Of `pids`, the linked sessions (or ones a Cluster cycle is
    /// carrying, which only linked sessions leave a note for): read each
    /// pointer, then check the session it names, one batch each.
    async fn linked_of(&self, pids: &[PublicId]) -> Result<Vec<PublicId>, StoreError> {
        let gets: Vec<Op> = pids
            .iter()
            .map(|p| {
                let mut get = redis::cmd("GET");
                get.arg(self.pointer_key(p));
                Op::Cmd(get)
            })
            .collect();
        let mut at = Vec::new();
        for (p, r) in pids.iter().zip(self.many(&gets).await?) {
            // Not a string (no pointer, or not ours): nothing to end here.
            let Ok(v) = r else { continue };
            if let Some(to) = text(&v).and_then(SessionId::parse_bytes) {
                at.push((*p, to));
            }
        }
        let checks: Vec<Op> = at
            .iter()
            .map(|(p, to)| {
                Op::Lua(
                    &SCRIPTS.is_linked,
                    vec![self.key(to), self.taken_key(to)],
                    vec![bytes(p)],
                )
            })
            .collect();
        let mut linked = Vec::new();
        for ((p, _), r) in at.iter().zip(self.many(&checks).await?) {
            if matches!(r?, Value::Int(1)) {
                linked.push(*p);
            }
        }
        Ok(linked)
    }

    /// Ends the sessions named by `pids` wherever they live now: how many
    /// were live, and the links of those (to unindex). With `linked_only`,
    /// a session that holds no link is left alone (it has a pointer only
    /// because it was cycled: not the registry's to end).
    ///
    /// On Cluster, that check comes first (two batches: read the pointers,
    /// then one script per session); a session unlinked between the check
    /// and the end is ended anyway, as if the end had come first.
    ///
    /// Standalone: one script per session, all in one pipeline, each
    /// deleting the pointer and the session it names atomically. Cluster:
    /// the `end` protocol without its first step, in two batches: mark
    /// every pointer `ended` reading where it pointed (a move still in
    /// flight then stops), then delete each session there.
    async fn end_all_public(
        &self,
        pids: &[PublicId],
        linked_only: bool,
    ) -> Result<(usize, Vec<(PublicId, String, String)>), StoreError> {
        let checked;
        let pids = if linked_only && matches!(self.conn, Conn::Cluster(_)) {
            checked = self.linked_of(pids).await?;
            &checked[..]
        } else {
            pids
        };
        let replies: Vec<(PublicId, Result<Value, StoreError>)> =
            if matches!(self.conn, Conn::Cluster(_)) {
                let ttl = self.ended_mark_ttl().as_millis() as u64;
                let mark = |p: &PublicId| {
                    let mut mark = redis::cmd("SET");
                    mark.arg(self.pointer_key(p))
                        .arg(ENDED)
                        .arg("PX")
                        .arg(ttl)
                        .arg("GET");
                    mark
                };
                let marks: Vec<Op> = pids.iter().map(|p| Op::Cmd(mark(p))).collect();
                let marked = self.many(&marks).await?;
                let mut targets = Vec::new();
                for (p, r) in pids.iter().zip(marked) {
                    let v = match r {
                        Err(e) if super::conn::redis_code(&e) == Some("WRONGTYPE") => {
                            // Not a pointer of ours: replace it.
                            self.delete_key(&self.pointer_key(p)).await?;
                            self.write(&mark(p)).await?
                        }
                        r => r?,
                    };
                    if let Some(to) = text(&v).and_then(SessionId::parse_bytes) {
                        targets.push((*p, to));
                    }
                }
                let drops: Vec<Op> = targets
                    .iter()
                    .map(|(p, to)| {
                        Op::Lua(
                            &SCRIPTS.drop,
                            vec![self.key(to), self.taken_key(to)],
                            vec![bytes(p)],
                        )
                    })
                    .collect();
                let dropped = self.many(&drops).await?;
                targets.into_iter().map(|(p, _)| p).zip(dropped).collect()
            } else {
                let ops: Vec<Op> = pids
                    .iter()
                    .map(|p| {
                        Op::lua(
                            &SCRIPTS.end_public,
                            self.pointer_key(p),
                            vec![
                                bytes(&*self.prefix),
                                bytes(p),
                                bytes(if linked_only { "1" } else { "0" }),
                            ],
                        )
                    })
                    .collect();
                let replies = self.many(&ops).await?;
                pids.iter().copied().zip(replies).collect()
            };
        let mut ended = 0;
        let mut links = Vec::new();
        for (p, r) in replies {
            let Value::Array(v) = r? else { continue };
            if !matches!(v.first(), Some(Value::Int(1))) {
                continue;
            }
            ended += 1;
            let mut meta = Meta::new();
            if let Some(field) = v.get(1).and_then(text) {
                let _ = decode_links(field, &mut meta);
            }
            links.extend(meta.links().map(|(n, v)| (p, n.to_owned(), v.to_owned())));
        }
        Ok((ended, links))
    }
}

/// What an `HMGET` of a session's fields (created, public id, links, idle
/// timeout, persistence, then the old layout's created and public id) and
/// its key's `PEXPIRETIME` say of the entry `public_id` in the index of
/// `name = value`.
fn judge(
    public_id: &PublicId,
    f: &[Value],
    expiry: i64,
    name: &str,
    value: &str,
    now: Timestamp,
) -> State {
    let field = |i: usize| f.get(i).and_then(text);
    let (created, pid) = match (field(0), field(1)) {
        (None, None) => (field(5), field(6)),
        (c, p) => (c, p),
    };
    let pid = pid.and_then(|b| std::str::from_utf8(b).ok()?.parse::<PublicId>().ok());
    let (Some(created), Ok(expires)) = (created.and_then(parse_millis), u64::try_from(expiry))
    else {
        return State::Absent;
    };
    if pid != Some(*public_id) {
        return State::Absent;
    }
    let mut meta = Meta::new();
    if let Some(l) = field(2) {
        if decode_links(l, &mut meta).is_none() {
            return State::Other;
        }
    }
    if let Some(ms) = field(3).and_then(parse_millis) {
        meta.set_idle_timeout(Some(Duration::from_millis(ms)));
    }
    match field(4) {
        Some(b"1") => meta.set_persistent_cookie(Some(true)),
        Some(b"0") => meta.set_persistent_cookie(Some(false)),
        _ => {}
    }
    if expires <= now.as_millis() || meta.link(name) != Some(value) {
        return State::Other;
    }
    State::Linked(Listed {
        public_id: *public_id,
        created_at: Timestamp::from_millis(created),
        expires_at: Timestamp::from_millis(expires),
        meta,
    })
}
