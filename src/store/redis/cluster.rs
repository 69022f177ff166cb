//! `cycle` and `end` on Redis Cluster, where the old id, the new id and the
//! move pointer live in different slots. The protocol and why every
//! interleaving ends the session are in the
//! [module docs](super#cycle_id-and-logout-on-redis-cluster).

use std::time::{Duration, Instant};

use redis::Value;

use super::hash::{clamp, parse_hash, Parsed};
use super::scripts::{ENDED, SCRIPTS};
use super::{int, warn_corrupted, RedisStore};
use crate::error::StoreError;
use crate::id::{PublicId, SessionId};
use crate::store::{ChangeSet, CycleOutcome, Record, Renewal, Timestamp};

impl RedisStore {
    /// The longest a cluster `cycle` may take from sending step 1 to the
    /// answer of step 3 and still report [`CycleOutcome::Moved`]: three
    /// commands, each within its bound.
    pub(super) fn cycle_budget(&self) -> Duration {
        self.step_bound() * 3
    }

    /// How long an "ended" mark stays on a move pointer: longer than any
    /// cycle that can still succeed ([`cycle_budget`](Self::cycle_budget)),
    /// plus a margin for the two clocks (the app's and Redis's) running at
    /// slightly different rates.
    pub(super) fn ended_mark_ttl(&self) -> Duration {
        self.cycle_budget() + Duration::from_secs(2)
    }

    pub(super) async fn cycle_cluster(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        Renewal { now, expires_at }: Renewal,
    ) -> Result<CycleOutcome, StoreError> {
        let started = Instant::now();
        let old_key = self.key(old);
        // Step 1: take the old session (read and delete, one script).
        let taken = self
            .eval(&SCRIPTS.take, &[&old_key, &self.taken_key(old)], |cmd| {
                cmd.arg(clamp(now))
                    .arg(self.ended_mark_ttl().as_millis() as u64);
            })
            .await?;
        let (original, old_horizon) = match taken {
            Value::Int(0) => return Ok(CycleOutcome::Gone),
            Value::Int(-1) => {
                warn_corrupted(old, "not a session hash");
                return Ok(CycleOutcome::Gone);
            }
            v => match take_reply(v) {
                Parsed::Found(r, h) => (r, h),
                Parsed::Absent => return Ok(CycleOutcome::Gone),
                Parsed::Corrupt(reason) => {
                    warn_corrupted(old, reason);
                    return Ok(CycleOutcome::Gone);
                }
            },
        };
        let public_id = original.public_id;
        let mut items = original.items.clone();
        items.apply(changes);
        let meta = original.meta.applied(changes);
        if items.is_empty() {
            let mut all = original.meta.clone();
            for (n, v) in meta.links() {
                all.set_link(n, v);
            }
            let links: Vec<(String, String)> = original
                .meta
                .links()
                .chain(meta.links())
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            self.unindex(&public_id, &links, Timestamp::now()).await;
            return Ok(CycleOutcome::Deleted);
        }
        let dropped: Vec<(String, String)> = original
            .meta
            .links()
            .filter(|(n, v)| meta.link(n) != Some(v))
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let moved = Record {
            items,
            created_at: original.created_at,
            expires_at: if changes.sets_idle_timeout() {
                expires_at
            } else {
                original.expires_at.max(expires_at)
            },
            public_id,
            meta,
        };
        let put_back = || async {
            if let Err(e) = self
                .create_key(&old_key, &original, None, old_horizon)
                .await
            {
                tracing::warn!(session = ?old, error = %crate::error::Chain(&e), "RedisStore: could not restore a session after a failed cycle");
            }
        };
        // The index step, again for every link: a pruner may have taken an
        // entry out while the session was between its two ids (its pointer
        // still names the old one). Fresh entries are not pruned until the
        // new session's deadline has passed.
        let mut deadline = None;
        let mut horizon = 0;
        if moved.meta.links().len() > 0 {
            horizon = old_horizon.max(super::ops::horizon(now, clamp(moved.expires_at)));
            let sent = Timestamp::now();
            match self
                .index_step(&public_id, None, moved.meta.links(), horizon, false)
                .await
            {
                Ok(ready) => deadline = ready.map(|r| r.deadline),
                Err(e) => {
                    put_back().await;
                    return Err(e);
                }
            }
            let _ = sent;
        }
        // Step 2: create the new session (insert-if-absent).
        let new_key = self.key(new);
        match self.create_key(&new_key, &moved, deadline, horizon).await? {
            Some(true) => {}
            Some(false) => {
                // The new id is taken: put the session back, unchanged, and let
                // the layer retry with another id. Nobody creates under `old`
                // meanwhile (ids are made fresh for every creation).
                put_back().await;
                return Ok(CycleOutcome::Collision);
            }
            None => {
                put_back().await;
                return Err(StoreError::unavailable(
                    "cycle_id on Redis Cluster took longer than its window; the session was not moved",
                ));
            }
        }
        // Step 3: point the move pointer at the new id, unless a logout
        // marked it ended meanwhile.
        let pointed = self
            .eval(
                &SCRIPTS.point,
                &[&self.pointer_key(&moved.public_id)],
                |cmd| {
                    cmd.arg(new.encode().as_str())
                        .arg(clamp(moved.expires_at).max(horizon));
                },
            )
            .await?;
        if int(&pointed)? == 0 {
            // A logout of this session ran after step 1: it is over.
            self.delete_key(&new_key).await?;
            return Ok(CycleOutcome::Gone);
        }
        if started.elapsed() > self.cycle_budget() {
            // Too slow to rely on the "ended" mark having outlived this
            // move: a logout may have missed it. Never hand out the id.
            if let Err(e) = self.delete_key(&new_key).await {
                tracing::warn!(error = %crate::error::Chain(&e), "RedisStore: could not delete a late cycle's session");
            }
            return Err(StoreError::unavailable(format!(
                "cycle_id on Redis Cluster took longer than {:?}; the session was not moved",
                self.cycle_budget()
            )));
        }
        self.unindex(&public_id, &dropped, Timestamp::now()).await;
        Ok(CycleOutcome::Moved)
    }

    pub(super) async fn end_cluster(
        &self,
        id: &SessionId,
        public_id: &PublicId,
    ) -> Result<(), StoreError> {
        let key = self.key(id);
        let pointer = self.pointer_key(public_id);
        if self.delete_key(&key).await? {
            // It was still under the id the request loaded: no move took it
            // since. A pointer naming that id is garbage now.
            self.eval(&SCRIPTS.unpoint, &[&pointer], |cmd| {
                cmd.arg(id.encode().as_str());
            })
            .await?;
            return Ok(());
        }
        // Moved (or gone): mark the pointer ended, reading where it pointed,
        // in one command; then end the session there.
        let mut mark = redis::cmd("SET");
        mark.arg(&pointer)
            .arg(ENDED)
            .arg("PX")
            .arg(self.ended_mark_ttl().as_millis() as u64)
            .arg("GET");
        let previous = match self.write(&mark).await {
            Err(e) if super::conn::redis_code(&e) == Some("WRONGTYPE") => {
                // Not ours: replace it.
                self.delete_key(&pointer).await?;
                self.write(&mark).await?
            }
            r => r?,
        };
        let to = match previous {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        };
        if let Some(to) = to.and_then(|t| t.parse::<SessionId>().ok()) {
            self.delete_key(&self.key(&to)).await?;
        }
        Ok(())
    }
}

/// The take script's reply, `{expiry, hash}`, read.
fn take_reply(v: Value) -> Parsed {
    match v {
        Value::Array(v) => match <[Value; 2]>::try_from(v) {
            Ok([Value::Int(expiry), hash]) => parse_hash(hash, expiry),
            _ => Parsed::Corrupt("unexpected reply from the take script"),
        },
        _ => Parsed::Corrupt("unexpected reply from the take script"),
    }
}
