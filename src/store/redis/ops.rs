//! The [`SessionStore`] operations of [`RedisStore`]: one Redis command or
//! script each (two or three on Cluster for `cycle` and `end`, see
//! [`cluster`](super::cluster)).

use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::conn::{map_err, redis_code, Conn};
use super::hash::{clamp, duration_millis, encode_links, parse_hash, Parsed};
use super::scripts::{push_changes, push_meta, Ready, FAST_SETS, SCRIPTS};
use super::RedisStore;
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{
    is_valid_link, ChangeSet, CycleOutcome, Keep, Listed, Meta, Record, Renewal, SaveOutcome,
    SessionStore, StoreFuture, Timestamp,
};

impl RedisStore {
    /// The Redis key of session `id`: `{prefix}{<id>}`.
    pub(super) fn key(&self, id: &SessionId) -> Vec<u8> {
        let id = id.encode();
        let mut key = Vec::with_capacity(self.prefix.len() + id.as_str().len() + 2);
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'{');
        key.extend_from_slice(id.as_str().as_bytes());
        key.push(b'}');
        key
    }

    /// The key of a session's move pointer: `{prefix}moved:{<public id>}`
    /// (the scripts build the same name).
    pub(super) fn pointer_key(&self, public_id: &PublicId) -> Vec<u8> {
        format!("{}moved:{{{public_id}}}", self.prefix).into_bytes()
    }

    /// Deletes a corrupted session's key and logs it. Never fails: the
    /// caller reports the session as absent either way.
    pub(super) async fn drop_corrupted(&self, id: &SessionId, key: &[u8], reason: &str) {
        warn_corrupted(id, reason);
        if let Err(e) = self.delete_key(key).await {
            tracing::warn!(session = ?id, error = %crate::error::Chain(&e), "could not delete corrupted session data");
        }
    }

    /// `DEL key`; whether it existed.
    pub(super) async fn delete_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        Ok(int(&self.write(&cmd).await?)? > 0)
    }

    /// Creates `record` under `key` if the key is free; with links, its
    /// index step must have run (`ready`), or `horizon` must be the one the
    /// index keys already reach (a cluster `cycle` putting a session back).
    /// `Ok(None)` when the deadline of `ready` passed before Redis ran it.
    pub(super) async fn create_key(
        &self,
        key: &[u8],
        record: &Record,
        deadline: Option<u64>,
        horizon: u64,
    ) -> Result<Option<bool>, StoreError> {
        let v = self
            .eval(&SCRIPTS.create, &[key], |cmd| {
                cmd.arg(clamp(record.created_at))
                    .arg(clamp(record.expires_at))
                    .arg(record.public_id.to_string());
                match deadline {
                    Some(d) => cmd.arg(d),
                    None => cmd.arg(""),
                };
                cmd.arg(horizon).arg(encode_links(&record.meta));
                match record.meta.idle_timeout() {
                    Some(t) => cmd.arg(duration_millis(t)),
                    None => cmd.arg(""),
                };
                match record.meta.persistent_cookie() {
                    Some(p) => cmd.arg(if p { "1" } else { "0" }),
                    None => cmd.arg(""),
                };
                for (k, v) in record.items.iter() {
                    cmd.arg(k).arg(v);
                }
            })
            .await?;
        Ok(match int(&v)? {
            -2 => None,
            n => Some(n == 1),
        })
    }
}

/// The horizon a linking write gives the session's index keys and move
/// pointer: twice as far ahead as the session's expiry, so that the
/// session's own refreshes move past it only about once per idle timeout
/// (each time costing the index step again).
pub(super) fn horizon(now: Timestamp, expires_at: u64) -> u64 {
    let ahead = expires_at.saturating_sub(clamp(now));
    expires_at
        .saturating_add(ahead)
        .min(clamp(Timestamp::from_millis(u64::MAX)))
}

/// A write script's reply: `{code, public id, …}`, see `SAVE_LUA`.
pub(super) struct Reply {
    pub(super) code: i64,
    pub(super) public_id: Option<PublicId>,
    /// For code 4: the session's stored expiry.
    pub(super) stored: u64,
    pub(super) links: Vec<(String, String)>,
}

impl Reply {
    pub(super) fn parse(v: Value) -> Result<Reply, StoreError> {
        let Value::Array(v) = v else {
            return Ok(Reply {
                code: int(&v)?,
                public_id: None,
                stored: 0,
                links: Vec::new(),
            });
        };
        let mut it = v.into_iter();
        let code = int(&it.next().unwrap_or(Value::Nil))?;
        let mut texts = it.map(|v| match v {
            Value::BulkString(b) => String::from_utf8(b).unwrap_or_default(),
            Value::SimpleString(s) => s,
            Value::Int(n) => n.to_string(),
            _ => String::new(),
        });
        let public_id = texts.next().and_then(|p| p.parse().ok());
        let stored = if code == 4 {
            texts.next().and_then(|e| e.parse().ok()).unwrap_or(0)
        } else {
            0
        };
        let mut links = Vec::new();
        while let (Some(n), Some(v)) = (texts.next(), texts.next()) {
            links.push((n, v));
        }
        Ok(Reply {
            code,
            public_id,
            stored,
            links,
        })
    }

    /// The links the session has once `changes` are applied (for code 4).
    fn links_after(&self, changes: Option<&ChangeSet>) -> Meta {
        let mut meta = Meta::new();
        for (n, v) in &self.links {
            meta.set_link(n, v);
        }
        if let Some(c) = changes {
            meta.apply(c);
        }
        meta
    }
}

pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        // The reply's type only: its content could be a session's data, and
        // this error is logged and counted.
        other => Err(StoreError::other(format!(
            "unexpected reply from a RedisStore script: {}, not an integer",
            reply_type(other)
        ))),
    }
}

/// The RESP type of a reply, for error messages that must not carry it.
pub(super) fn reply_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::SimpleString(_) | Value::Okay => "a simple string",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "another type",
    }
}

#[cfg(test)]
mod reply_tests {
    use super::*;

    #[test]
    fn an_unexpected_reply_is_not_copied_into_the_error() {
        let secret = b"token-of-alice".to_vec();
        for v in [
            Value::BulkString(secret.clone()),
            Value::Array(vec![Value::BulkString(secret.clone())]),
            Value::SimpleString("token-of-alice".into()),
        ] {
            let e = int(&v).unwrap_err();
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&c.to_string());
                cause = c.source();
            }
            assert!(!text.contains("alice"), "{text}");
            assert!(text.contains("not an integer"), "{text}");
        }
        assert_eq!(int(&Value::Int(4)).ok(), Some(4));
    }
}

pub(super) fn warn_corrupted(id: &SessionId, reason: &str) {
    tracing::warn!(
        session = ?id,
        reason,
        "corrupted session data in Redis: treated as absent and deleted"
    );
}

/// The operations, as `async fn`s on `&self`; [`SessionStore`] runs each
/// in an owned future on a clone of the store (a connection handle).
impl RedisStore {
    async fn load_now(&self, id: &SessionId, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let key = self.key(id);
        // One round trip: the hash, then the expiry its TTL carries. Errors
        // come back per command, so each is classified as a lone one's.
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("HGETALL")
            .arg(&key)
            .cmd("PEXPIRETIME")
            .arg(&key);
        let replies = self.run(self.conn.query_pipe(&pipe)).await?;
        let Ok([reply, expiry]) = <[Value; 2]>::try_from(replies) else {
            return Err(StoreError::other(
                "RedisStore: Redis answered a pipeline of two with another number of replies",
            ));
        };
        let reply = match server_error(reply) {
            Ok(v) => v,
            Err(e) if redis_code(&e) == Some("WRONGTYPE") => {
                self.drop_corrupted(id, &key, "the key is not a hash").await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let expiry = match server_error(expiry).map_err(needs_pexpiretime)? {
            Value::Int(e) => e,
            other => {
                return Err(StoreError::other(format!(
                    "RedisStore: unexpected reply to PEXPIRETIME: {}, not an integer",
                    reply_type(&other)
                )))
            }
        };
        match parse_hash(reply, expiry) {
            Parsed::Absent => Ok(None),
            // Expired by the app's clock: Redis's TTL removes the key.
            Parsed::Found(r, _) if r.expires_at <= now => Ok(None),
            Parsed::Found(r, _) => Ok(Some(r)),
            Parsed::Corrupt(reason) => {
                self.drop_corrupted(id, &key, reason).await;
                Ok(None)
            }
        }
    }

    async fn create_now(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let key = self.key(id);
        if record.meta.links().len() == 0 {
            return Ok(self.create_key(&key, record, None, 0).await? == Some(true));
        }
        let h = horizon(record.created_at, clamp(record.expires_at));
        let Some(ready) = self
            .index_step(&record.public_id, Some(id), record.meta.links(), h, true)
            .await?
        else {
            // The fresh public id's pointer is marked ended: cannot happen
            // for a new session; report the id as taken so the layer
            // retries with new ones.
            return Ok(false);
        };
        match self
            .create_key(&key, record, Some(ready.deadline), h)
            .await?
        {
            Some(created) => Ok(created),
            None => Err(late()),
        }
    }

    async fn save_now(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> Result<SaveOutcome, StoreError> {
        let key = self.key(id);
        if is_fast(changes) {
            let v = self
                .eval(&SCRIPTS.save_fast, &[&key], |cmd| {
                    cmd.arg(clamp(at.now)).arg(clamp(at.expires_at));
                    for (k, v) in changes.iter() {
                        cmd.arg(k).arg(v.unwrap_or_default());
                    }
                })
                .await
                .map_err(needs_pexpiretime)?;
            match int(&v)? {
                1 => return Ok(SaveOutcome::Saved),
                0 => return Ok(SaveOutcome::Gone),
                // Anything unusual: the full script below decides.
                _ => {}
            }
        }
        let mut ready = None;
        for _ in 0..3 {
            let sent = Timestamp::now();
            let v = self
                .eval(&SCRIPTS.save, &[&key], |cmd| {
                    cmd.arg(clamp(at.now)).arg(clamp(at.expires_at));
                    push_meta(cmd, Some(changes), ready);
                    push_changes(cmd, changes);
                })
                .await?;
            let r = Reply::parse(v)?;
            match r.code {
                4 => match self.index_first(id, &r, Some(changes), at).await? {
                    Some(rd) => ready = Some(rd),
                    None => return Ok(SaveOutcome::Gone),
                },
                1 | 2 => {
                    if let Some(p) = r.public_id {
                        self.unindex(&p, &r.links, sent).await;
                    }
                    return Ok(if r.code == 1 {
                        SaveOutcome::Saved
                    } else {
                        SaveOutcome::Deleted
                    });
                }
                -2 => return Err(late()),
                -1 => {
                    warn_corrupted(id, "not a session hash");
                    return Ok(SaveOutcome::Gone);
                }
                _ => return Ok(SaveOutcome::Gone),
            }
        }
        Err(StoreError::other(
            "RedisStore: a write kept asking for its index step",
        ))
    }

    /// The index step a script asked for (reply code 4): the session's
    /// links once `changes` apply, covered to the horizon of its new expiry.
    pub(super) async fn index_first(
        &self,
        id: &SessionId,
        r: &Reply,
        changes: Option<&ChangeSet>,
        at: Renewal,
    ) -> Result<Option<Ready>, StoreError> {
        let Some(public_id) = r.public_id else {
            return Err(StoreError::other(
                "RedisStore: a script's reply lacks the public id",
            ));
        };
        let meta = r.links_after(changes);
        let exact = changes.is_some_and(ChangeSet::sets_idle_timeout);
        let exp = if exact {
            clamp(at.expires_at)
        } else {
            clamp(at.expires_at).max(r.stored)
        };
        self.index_step(
            &public_id,
            Some(id),
            meta.links(),
            horizon(at.now, exp),
            false,
        )
        .await
    }

    async fn cycle_now(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> Result<CycleOutcome, StoreError> {
        let Renewal { now, expires_at } = at;
        if matches!(self.conn, Conn::Cluster(_)) {
            return self.cycle_cluster(old, new, changes, at).await;
        }
        let (old_key, new_key) = (self.key(old), self.key(new));
        let mut ready = None;
        for _ in 0..3 {
            let sent = Timestamp::now();
            let v = self
                .eval(&SCRIPTS.cycle, &[&old_key, &new_key], |cmd| {
                    cmd.arg(clamp(now))
                        .arg(clamp(expires_at))
                        .arg(&*self.prefix);
                    push_meta(cmd, Some(changes), ready);
                    push_changes(cmd, changes);
                })
                .await?;
            let r = Reply::parse(v)?;
            match r.code {
                4 => match self.index_first(old, &r, Some(changes), at).await? {
                    Some(rd) => ready = Some(rd),
                    None => return Ok(CycleOutcome::Gone),
                },
                1 | 2 => {
                    if let Some(p) = r.public_id {
                        self.unindex(&p, &r.links, sent).await;
                    }
                    return Ok(if r.code == 1 {
                        CycleOutcome::Moved
                    } else {
                        CycleOutcome::Deleted
                    });
                }
                3 => return Ok(CycleOutcome::Collision),
                -2 => return Err(late()),
                -1 => {
                    warn_corrupted(old, "not a session hash");
                    return Ok(CycleOutcome::Gone);
                }
                _ => return Ok(CycleOutcome::Gone),
            }
        }
        Err(StoreError::other(
            "RedisStore: a write kept asking for its index step",
        ))
    }

    async fn delete_now(&self, id: &SessionId) -> Result<(), StoreError> {
        self.delete_key(&self.key(id)).await.map(drop)
    }

    async fn end_now(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
        if matches!(self.conn, Conn::Cluster(_)) {
            return self.end_cluster(id, public_id).await;
        }
        let keys: [&[u8]; 2] = [&self.key(id), &self.pointer_key(public_id)];
        self.eval(&SCRIPTS.end, &keys, |cmd| {
            cmd.arg(&*self.prefix);
        })
        .await
        .map(drop)
    }

    async fn touch_now(&self, id: &SessionId, at: Renewal) -> Result<bool, StoreError> {
        let key = self.key(id);
        let mut ready = None;
        for _ in 0..3 {
            let v = self
                .eval(&SCRIPTS.touch, &[&key], |cmd| {
                    cmd.arg(clamp(at.now)).arg(clamp(at.expires_at));
                    push_meta(cmd, None, ready);
                })
                .await?;
            let r = Reply::parse(v)?;
            match r.code {
                4 => match self.index_first(id, &r, None, at).await? {
                    Some(rd) => ready = Some(rd),
                    None => return Ok(false),
                },
                1 => return Ok(true),
                -1 => {
                    warn_corrupted(id, "not a session hash");
                    return Ok(false);
                }
                _ => return Ok(false),
            }
        }
        Err(StoreError::other(
            "RedisStore: a write kept asking for its index step",
        ))
    }
}

/// A pipeline's reply (sent with `ignore_errors`): an error reply as the
/// store error a lone command's would be.
fn server_error(v: Value) -> Result<Value, StoreError> {
    match v {
        Value::ServerError(e) => Err(map_err(redis::RedisError::from(e))),
        v => Ok(v),
    }
}

/// Whether `changes` can take the fast script (`SAVE_FAST_LUA`): item sets
/// only, no removal, no clear, no link or lifetime change, a few of them.
fn is_fast(changes: &ChangeSet) -> bool {
    let mut sets = 0;
    for (_, v) in changes.iter() {
        if v.is_none() {
            return false;
        }
        sets += 1;
    }
    (1..=FAST_SETS).contains(&sets) && !changes.cleared() && !changes.changes_meta()
}

/// An error from a server without `PEXPIRETIME` (Redis before 7.0) made
/// into one that says so; others unchanged.
pub(super) fn needs_pexpiretime(e: StoreError) -> StoreError {
    let text = crate::error::Chain(&e).to_string().to_ascii_lowercase();
    if text.contains("unknown") && text.contains("command") && text.contains("pexpiretime") {
        return StoreError::other(
            "RedisStore needs Redis 7.0 or later (PEXPIRETIME): this server does not know it",
        );
    }
    e
}

/// A linking write whose session step reached Redis after its deadline.
fn late() -> StoreError {
    StoreError::unavailable(
        "a RedisStore write that links a session took longer than its window; nothing was written",
    )
}

impl SessionStore for RedisStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        let (this, id) = (self.clone(), *id);
        StoreFuture::new(async move { this.load_now(&id, now).await })
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        let (this, id, record) = (self.clone(), *id, record.clone());
        StoreFuture::new(async move { this.create_now(&id, &record).await })
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        let (this, id, changes) = (self.clone(), *id, changes.clone());
        StoreFuture::new(async move { this.save_now(&id, &changes, at).await })
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        let (this, old, new, changes) = (self.clone(), *old, *new, changes.clone());
        StoreFuture::new(async move { this.cycle_now(&old, &new, &changes, at).await })
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        let (this, id) = (self.clone(), *id);
        StoreFuture::new(async move { this.delete_now(&id).await })
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        let (this, id, public_id) = (self.clone(), *id, *public_id);
        StoreFuture::new(async move { this.end_now(&id, &public_id).await })
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        let (this, id) = (self.clone(), *id);
        StoreFuture::new(async move { this.touch_now(&id, at).await })
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        if !is_valid_link(name, value) {
            return StoreFuture::ready(Ok(Vec::new()));
        }
        let (this, name, value) = (self.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { this.list_now(&name, &value, now, limit).await })
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        if !is_valid_link(name, value) {
            return StoreFuture::ready(Ok(0));
        }
        let (this, name, value) = (self.clone(), name.to_owned(), value.to_owned());
        StoreFuture::new(async move { this.end_linked_now(&name, &value, keep).await })
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let (this, public_id) = (self.clone(), *public_id);
        StoreFuture::new(async move { this.end_public_now(&public_id).await })
    }

    /// `PING` under the command timeout; on a Cluster, to every primary
    /// that `CLUSTER SLOTS` names, each on its own connection.
    fn ping(&self) -> StoreFuture<()> {
        let this = self.clone();
        StoreFuture::new(async move {
            match &this.conn {
                Conn::Standalone(_) | Conn::Sentinel(_) => {
                    this.run(this.conn.query(&redis::cmd("PING"))).await
                }
                Conn::Cluster(c) => this.run(ping_primaries(c.clone())).await,
            }
            .map(drop)
        })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// A readiness `PING` to every primary of a cluster: `CLUSTER SLOTS` (from
/// a primary), then one `PING` to each primary it names, on the client's
/// connection to that address. A primary that is down fails it (its slots
/// are still its own until a replica takes over): the client holds no
/// connection to it. Not redis-rs's all-primaries routing of a lone `PING`,
/// nor routing by slot: both fall back to another node's connection when
/// the one they want is down.
async fn ping_primaries(mut c: ClusterConnection) -> Result<Value, RedisError> {
    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let random_primary = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
    let map = c.route_command(slots, random_primary).await?;
    let primaries = primaries(&map);
    if primaries.is_empty() {
        return Err(RedisError::from((
            ErrorKind::Server(ServerErrorKind::ClusterDown),
            "CLUSTER SLOTS named no primary",
        )));
    }
    let mut last = Value::Nil;
    for (host, port) in primaries {
        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
        last = c.route_command(redis::cmd("PING"), to).await?;
    }
    Ok(last)
}

/// The primaries (host, port) of a `CLUSTER SLOTS` reply
/// (`[[start, end, [host, port, id, …], replicas…], …]`), each once.
/// Entries that do not parse are skipped.
fn primaries(reply: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let Some(Value::Array(node)) = fields.get(2) else {
            continue;
        };
        let host = match node.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => continue,
        };
        let Some(Ok(port)) = node.get(1).map(|p| match p {
            Value::Int(p) => u16::try_from(*p).map_err(drop),
            _ => Err(()),
        }) else {
            continue;
        };
        if !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    out
}

#[cfg(test)]
mod ping_tests {
    use super::*;

    #[test]
    fn primaries_are_read_once_each_and_junk_is_skipped() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let range = |start: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(start + 10),
                Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            ])
        };
        let reply = Value::Array(vec![
            range(0, "10.0.0.1", 7000),
            range(11, "10.0.0.2", 7001),
            range(22, "10.0.0.1", 7000),
            range(33, "10.0.0.3", 99_999),
            Value::Array(vec![Value::Int(1)]),
            Value::Nil,
        ]);
        assert_eq!(
            primaries(&reply),
            vec![("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7001)]
        );
        assert!(primaries(&Value::Nil).is_empty());
    }
}
