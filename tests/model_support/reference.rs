//! [`RefStore`]: the simplest correct store (the `SessionStore` docs'
//! example, plus expiry), for checking the checker: every history against it
//! must pass, so a failure on a real store is the real store's, not an
//! oracle mistake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tower_session_storage::store::{
    ChangeSet, CycleOutcome, Keep, Listed, Record, Renewal, SaveOutcome, StoreFuture, Timestamp,
};
use tower_session_storage::{PublicId, SessionId, SessionStore, StoreError};

/// One `Mutex<HashMap>`; every operation is atomic; `end` follows a move
/// through the session's public id.
#[derive(Clone, Default)]
pub(crate) struct RefStore(Arc<Mutex<HashMap<SessionId, Record>>>);

impl RefStore {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionId, Record>> {
        self.0.lock().unwrap()
    }
}

impl RefStore {
    fn do_load(&self, id: &SessionId, now: Timestamp) -> Result<Option<Record>, StoreError> {
        let mut map = self.map();
        match map.get(id) {
            Some(r) if r.expires_at <= now => {
                map.remove(id);
                Ok(None)
            }
            r => Ok(r.cloned()),
        }
    }

    fn do_create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        let mut map = self.map();
        if map.contains_key(id) {
            return Ok(false);
        }
        map.insert(*id, record.clone());
        Ok(true)
    }

    fn do_save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> Result<SaveOutcome, StoreError> {
        let mut map = self.map();
        let Some(record) = map.get_mut(id) else {
            return Ok(SaveOutcome::Gone);
        };
        if record.expires_at <= at.now {
            map.remove(id);
            return Ok(SaveOutcome::Gone);
        }
        record.items.apply(changes);
        record.meta.apply(changes);
        record.expires_at = if changes.sets_idle_timeout() {
            at.expires_at
        } else {
            record.expires_at.max(at.expires_at)
        };
        if record.items.is_empty() {
            map.remove(id);
            return Ok(SaveOutcome::Deleted);
        }
        Ok(SaveOutcome::Saved)
    }

    fn do_cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> Result<CycleOutcome, StoreError> {
        let mut map = self.map();
        if map.contains_key(new) {
            return Ok(CycleOutcome::Collision);
        }
        let Some(mut record) = map.remove(old) else {
            return Ok(CycleOutcome::Gone);
        };
        if record.expires_at <= at.now {
            return Ok(CycleOutcome::Gone);
        }
        record.items.apply(changes);
        record.meta.apply(changes);
        if record.items.is_empty() {
            return Ok(CycleOutcome::Deleted);
        }
        record.expires_at = if changes.sets_idle_timeout() {
            at.expires_at
        } else {
            record.expires_at.max(at.expires_at)
        };
        map.insert(*new, record);
        Ok(CycleOutcome::Moved)
    }

    fn do_delete(&self, id: &SessionId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }

    fn do_end(&self, id: &SessionId, public_id: &PublicId) -> Result<(), StoreError> {
        self.map()
            .retain(|k, r| k != id && r.public_id != *public_id);
        Ok(())
    }

    fn do_touch(&self, id: &SessionId, at: Renewal) -> Result<bool, StoreError> {
        let mut map = self.map();
        match map.get_mut(id) {
            Some(r) if r.expires_at > at.now => {
                r.expires_at = r.expires_at.max(at.expires_at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl SessionStore for RefStore {
    fn load(&self, id: &SessionId, now: Timestamp) -> StoreFuture<Option<Record>> {
        StoreFuture::ready(self.do_load(id, now))
    }

    fn create(&self, id: &SessionId, record: &Record) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_create(id, record))
    }

    fn save(&self, id: &SessionId, changes: &ChangeSet, at: Renewal) -> StoreFuture<SaveOutcome> {
        StoreFuture::ready(self.do_save(id, changes, at))
    }

    fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        at: Renewal,
    ) -> StoreFuture<CycleOutcome> {
        StoreFuture::ready(self.do_cycle(old, new, changes, at))
    }

    fn delete(&self, id: &SessionId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_delete(id))
    }

    fn end(&self, id: &SessionId, public_id: &PublicId) -> StoreFuture<()> {
        StoreFuture::ready(self.do_end(id, public_id))
    }

    fn touch(&self, id: &SessionId, at: Renewal) -> StoreFuture<bool> {
        StoreFuture::ready(self.do_touch(id, at))
    }

    fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> StoreFuture<Vec<Listed>> {
        let map = self.map();
        let listed = map
            .values()
            .filter(|r| r.expires_at > now && r.meta.link(name) == Some(value))
            .map(Listed::of)
            .collect();
        StoreFuture::ready(Ok(Listed::newest(listed, limit)))
    }

    fn end_linked(&self, name: &str, value: &str, keep: Keep) -> StoreFuture<usize> {
        let mut map = self.map();
        let mut found = map
            .values()
            .filter(|r| r.meta.link(name) == Some(value))
            .map(|r| (r.created_at, r.public_id))
            .collect();
        let victims = keep.victims(&mut found);
        map.retain(|_, r| !victims.contains(&r.public_id));
        StoreFuture::ready(Ok(victims.len()))
    }

    fn end_public(&self, public_id: &PublicId) -> StoreFuture<bool> {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, r| r.public_id != *public_id || !r.meta.has_links());
        StoreFuture::ready(Ok(map.len() < before))
    }
}
