//! The [`SessionStore`] operations of [`RedisStore`]: one Redis command or
//! script each (two or three on Cluster for `cycle` and `end`, see
//! [`cluster`](super::cluster)).

use redis::Value;

use super::conn::{redis_code, Conn};
use super::hash::{clamp, parse_hash, Parsed};
use super::scripts::{push_changes, SCRIPTS};
use super::RedisStore;
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{
    ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, SessionStore, StoreFuture,
    Timestamp,
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

    /// Creates `record` under `key` if the key is free.
    pub(super) async fn create_key(&self, key: &[u8], record: &Record) -> Result<bool, StoreError> {
        let v = self
            .eval(&SCRIPTS.create, &[key], |cmd| {
                cmd.arg(clamp(record.created_at))
                    .arg(clamp(record.expires_at))
                    .arg(record.public_id.to_string());
                for (k, v) in record.items.iter() {
                    cmd.arg(k).arg(v);
                }
            })
            .await?;
        Ok(int(&v)? == 1)
    }
}

pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(StoreError::other(format!(
            "unexpected reply from a RedisStore script: {other:?}"
        ))),
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
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&key);
        let reply = match self.run(self.conn.query(&cmd)).await {
            Ok(v) => v,
            Err(e) if redis_code(&e) == Some("WRONGTYPE") => {
                self.drop_corrupted(id, &key, "the key is not a hash").await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match parse_hash(reply) {
            Parsed::Absent => Ok(None),
            // Expired by the app's clock: Redis's TTL removes the key.
            Parsed::Found(r) if r.expires_at <= now => Ok(None),
            Parsed::Found(r) => Ok(Some(r)),
            Parsed::Corrupt(reason) => {
                self.drop_corrupted(id, &key, reason).await;
                Ok(None)
            }
        }
    }

    async fn create_now(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        self.create_key(&self.key(id), record).await
    }

    async fn save_now(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        Renewal { now, expires_at }: Renewal,
    ) -> Result<SaveOutcome, StoreError> {
        let v = self
            .eval(&SCRIPTS.save, &[&self.key(id)], |cmd| {
                cmd.arg(clamp(now)).arg(clamp(expires_at));
                push_changes(cmd, changes);
            })
            .await?;
        Ok(match int(&v)? {
            1 => SaveOutcome::Saved,
            2 => SaveOutcome::Deleted,
            -1 => {
                warn_corrupted(id, "not a session hash");
                SaveOutcome::Gone
            }
            _ => SaveOutcome::Gone,
        })
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
        let v = self
            .eval(&SCRIPTS.cycle, &[&self.key(old), &self.key(new)], |cmd| {
                cmd.arg(clamp(now))
                    .arg(clamp(expires_at))
                    .arg(&*self.prefix);
                push_changes(cmd, changes);
            })
            .await?;
        Ok(match int(&v)? {
            1 => CycleOutcome::Moved,
            2 => CycleOutcome::Deleted,
            3 => CycleOutcome::Collision,
            -1 => {
                warn_corrupted(old, "not a session hash");
                CycleOutcome::Gone
            }
            _ => CycleOutcome::Gone,
        })
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

    async fn touch_now(
        &self,
        id: &SessionId,
        Renewal { now, expires_at }: Renewal,
    ) -> Result<bool, StoreError> {
        let v = self
            .eval(&SCRIPTS.touch, &[&self.key(id)], |cmd| {
                cmd.arg(clamp(now)).arg(clamp(expires_at));
            })
            .await?;
        Ok(match int(&v)? {
            1 => true,
            -1 => {
                warn_corrupted(id, "not a session hash");
                false
            }
            _ => false,
        })
    }
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

    // TODO(links): the index of links; until then the registry reports an error.
    fn list(&self, _: &str, _: &str, _: Timestamp, _: usize) -> StoreFuture<Vec<Listed>> {
        StoreFuture::ready(Err(StoreError::other(
            "RedisStore does not index links yet",
        )))
    }

    fn end_linked(&self, _: &str, _: &str, _: Keep) -> StoreFuture<usize> {
        StoreFuture::ready(Err(StoreError::other(
            "RedisStore does not index links yet",
        )))
    }

    fn end_public(&self, _: &PublicId) -> StoreFuture<bool> {
        StoreFuture::ready(Err(StoreError::other(
            "RedisStore does not index links yet",
        )))
    }
}
