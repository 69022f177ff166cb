//! [`RefStore`]: the simplest correct store (the `SessionStore` docs'
//! example, plus expiry), for checking the checker: every history against it
//! must pass, so a failure on a real store is the real store's, not an
//! oracle mistake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tower_session_storage::store::{ChangeSet, CycleOutcome, Record, SaveOutcome};
use tower_session_storage::{PublicId, SessionId, SessionStore, StoreError};

/// One `Mutex<HashMap>`; every operation is atomic; `end` follows a move
/// through the session's public id.
#[derive(Clone, Default)]
pub(crate) struct RefStore(Arc<Mutex<HashMap<SessionId, Record>>>);

/// The crate's clock: the wall clock, shifted by how far tokio's clock is
/// from the real one (so paused time moves it only through `advance`).
fn now_millis() -> u64 {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let real = Instant::now();
    let tokio = tokio::time::Instant::now().into_std();
    match tokio.checked_duration_since(real) {
        Some(ahead) => wall + ahead.as_millis() as u64,
        None => wall - real.duration_since(tokio).as_millis() as u64,
    }
}

impl RefStore {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Record>> {
        self.0.lock().unwrap()
    }
}

impl SessionStore for RefStore {
    async fn load(&self, id: &SessionId) -> Result<Option<Record>, StoreError> {
        let mut map = self.map();
        match map.get(id) {
            Some(r) if r.expires_at <= now_millis() => {
                map.remove(id);
                Ok(None)
            }
            r => Ok(r.cloned()),
        }
    }

    async fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let mut map = self.map();
        if map.contains_key(id) {
            return Ok(false);
        }
        map.insert(*id, record.clone());
        Ok(true)
    }

    async fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> Result<SaveOutcome, StoreError> {
        let mut map = self.map();
        let Some(record) = map.get_mut(id) else {
            return Ok(SaveOutcome::Gone);
        };
        if record.expires_at <= now_millis() {
            map.remove(id);
            return Ok(SaveOutcome::Gone);
        }
        record.items.apply(changes);
        record.expires_at = record.expires_at.max(expires_at);
        if record.items.is_empty() {
            map.remove(id);
            return Ok(SaveOutcome::Deleted);
        }
        Ok(SaveOutcome::Saved)
    }

    async fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        expires_at: u64,
    ) -> Result<CycleOutcome, StoreError> {
        let mut map = self.map();
        if map.contains_key(new) {
            return Ok(CycleOutcome::Collision);
        }
        let Some(mut record) = map.remove(old) else {
            return Ok(CycleOutcome::Gone);
        };
        if record.expires_at <= now_millis() {
            return Ok(CycleOutcome::Gone);
        }
        record.items.apply(changes);
        if record.items.is_empty() {
            return Ok(CycleOutcome::Deleted);
        }
        record.expires_at = record.expires_at.max(expires_at);
        map.insert(*new, record);
        Ok(CycleOutcome::Moved)
    }

    async fn delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }

    async fn end(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
        self.map()
            .retain(|k, r| k != id && r.public_id != *public_id);
        Ok(())
    }

    async fn touch(&self, id: &SessionId, expires_at: u64) -> Result<bool, StoreError> {
        let mut map = self.map();
        match map.get_mut(id) {
            Some(r) if r.expires_at > now_millis() => {
                r.expires_at = r.expires_at.max(expires_at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
