//! The store operations on the map, each atomic per session.

use super::*;

impl Inner {
    pub(super) fn load(&self, id: &SessionId, now: Timestamp) -> Option<Record> {
        self.maintain(now);
        {
            let record = self.map.get(id)?;
            if is_reservation(&record) {
                return None;
            }
            if record.expires_at > now {
                let mut record = record.clone();
                record.created_at = flag_moved(record.created_at, false);
                return Some(record);
            }
        }
        if let Some((_, record)) = self
            .map
            .remove_if(id, |_, r| r.expires_at <= now && !is_reservation(r))
        {
            self.forget(id, &record);
            telemetry::memory_reclaimed(1);
        }
        None
    }

    pub(super) fn full(max: usize) -> StoreError {
        StoreError::new(
            StoreErrorKind::Full,
            format!(
                "memory store holds its maximum of {max} live sessions; \
                 raise MemoryStore::with_max_sessions or shorten the idle timeout"
            ),
        )
    }

    /// Takes one place under the cap; `false` when the store is full.
    pub(super) fn reserve(&self, max: usize) -> bool {
        match self
            .len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            }) {
            Ok(n) => {
                self.peak.fetch_max(n + 1, Ordering::Relaxed);
                telemetry::memory_sessions(true);
                true
            }
            Err(_) => false,
        }
    }

    pub(super) fn create(&self, id: &SessionId, record: &Record) -> Result<bool, StoreError> {
        // A new record is made at the request's time.
        let now = record.created_at;
        self.maintain(now);
        let max = self.max_sessions.load(Ordering::Relaxed);
        if !self.reserve(max) {
            let mut examined = 0;
            let mut due = now;
            loop {
                let n = self.sweep_until(now, due, MAX_BATCH, true);
                examined += n;
                if self.reserve(max) {
                    break;
                }
                if n == 0 || examined >= FULL_SWEEP_BUDGET {
                    if due == now {
                        // A session that expired within the current second
                        // is filed under the second's end: look there once
                        // too before refusing.
                        due = now.saturating_add(Duration::from_millis(999));
                        continue;
                    }
                    telemetry::memory_refused();
                    return Err(Self::full(max));
                }
            }
        }
        match self.map.entry(*id) {
            Entry::Occupied(_) => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                telemetry::memory_sessions(false);
                return Ok(false);
            }
            Entry::Vacant(v) => {
                let mut record = record.clone();
                // The top bit of `created_at` is the store's own flag
                // (`MOVED`), and `u64::MAX` marks a cycle's reservation: a
                // caller's record can set neither (no real time reaches that
                // bit; such a record simply expires by its `expires_at`).
                let linked = record.meta.has_links();
                record.created_at = flag_moved(record.created_at, linked);
                if linked {
                    // Indexed and tracked before the session appears, so
                    // that its removal from then on finds both.
                    self.moves.insert(record.public_id, *id);
                    for (name, value) in record.meta.links() {
                        self.index(name, value, record.public_id);
                    }
                }
                v.insert(record);
            }
        }
        self.file([(bucket_of(record.expires_at), *id)]);
        Ok(true)
    }

    pub(super) fn save(
        &self,
        id: &SessionId,
        changes: &ChangeSet,
        Renewal { now, expires_at }: Renewal,
    ) -> SaveOutcome {
        self.maintain(now);
        let (removed, outcome) = match self.map.entry(*id) {
            Entry::Vacant(_) => return SaveOutcome::Gone,
            Entry::Occupied(e) if is_reservation(e.get()) => return SaveOutcome::Gone,
            Entry::Occupied(e) if e.get().expires_at <= now => (e.remove(), SaveOutcome::Gone),
            Entry::Occupied(mut e) => {
                let record = e.get_mut();
                record.items.apply(changes);
                if !record.items.is_empty() {
                    self.relink(record, changes, Some(id));
                    if changes.sets_idle_timeout() {
                        // A new idle timeout sets the expiry, earlier or
                        // later: file the session under it.
                        record.expires_at = expires_at;
                        drop(e);
                        self.file([(bucket_of(expires_at), *id)]);
                    } else {
                        record.expires_at = record.expires_at.max(expires_at);
                    }
                    return SaveOutcome::Saved;
                }
                (e.remove(), SaveOutcome::Deleted)
            }
        };
        self.forget(id, &removed);
        outcome
    }

    pub(super) fn cycle(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &ChangeSet,
        Renewal { now, expires_at }: Renewal,
    ) -> CycleOutcome {
        self.maintain(now);
        let public_id = match self.map.get(old) {
            Some(r) if !is_reservation(&r) => r.public_id,
            _ => return CycleOutcome::Gone,
        };
        // The lock `end` takes for this session: whichever of the two runs
        // second sees what the first did.
        let stripe = self.stripe(&public_id);
        // Hold the new id first, so that a collision changes nothing and the
        // old id is never seen gone and then back.
        match self.map.entry(*new) {
            Entry::Occupied(_) => return CycleOutcome::Collision,
            Entry::Vacant(v) => {
                v.insert(reservation(public_id));
            }
        }
        let unreserve = || {
            self.map.remove_if(new, |_, r| is_reservation(r));
        };
        let Some((_, mut record)) = self
            .map
            .remove_if(old, |_, r| r.public_id == public_id && !is_reservation(r))
        else {
            unreserve();
            return CycleOutcome::Gone;
        };
        if record.expires_at <= now {
            unreserve();
            self.forget(old, &record);
            return CycleOutcome::Gone;
        }
        record.items.apply(changes);
        if record.items.is_empty() {
            unreserve();
            self.forget(old, &record);
            return CycleOutcome::Deleted;
        }
        // Under the stripe lock, and with the session in no map entry: no
        // other operation changes its links meanwhile.
        self.relink(&mut record, changes, None);
        record.expires_at = if changes.sets_idle_timeout() {
            expires_at
        } else {
            record.expires_at.max(expires_at)
        };
        record.created_at = flag_moved(record.created_at, true);
        let at = bucket_of(record.expires_at);
        // Remembered before the session appears under `new`, so that any
        // removal of it from then on also forgets the move.
        self.moves.insert(public_id, *new);
        match self.map.get_mut(new) {
            Some(mut held) => *held = record,
            // Nothing removes a reservation but its owner; kept total.
            None => {
                self.map.insert(*new, record);
            }
        }
        drop(stripe);
        self.file([(at, *new)]);
        CycleOutcome::Moved
    }

    pub(super) fn delete(&self, id: &SessionId) {
        if let Some((_, record)) = self.map.remove_if(id, |_, r| !is_reservation(r)) {
            self.forget(id, &record);
        }
    }

    pub(super) fn end(&self, id: &SessionId, public_id: &PublicId) {
        let _stripe = self.stripe(public_id);
        if let Some((_, record)) = self.map.remove_if(id, |_, r| !is_reservation(r)) {
            self.forget(id, &record);
        }
        // Wherever a cycle moved it. Under the stripe lock, no cycle of this
        // session is halfway.
        if let Some((_, at)) = self.moves.remove(public_id) {
            if let Some((_, record)) = self
                .map
                .remove_if(&at, |_, r| r.public_id == *public_id && !is_reservation(r))
            {
                self.forget(&at, &record);
            }
        }
    }

    /// The live sessions linked as `name = value`: the newest `limit`,
    /// oldest first.
    pub(super) fn list(
        &self,
        name: &str,
        value: &str,
        now: Timestamp,
        limit: usize,
    ) -> Vec<Listed> {
        self.maintain(now);
        let listed: Vec<Listed> = self
            .linked(name, value)
            .into_iter()
            .filter_map(|public_id| {
                let at = *self.moves.get(&public_id)?;
                let record = self.map.get(&at)?;
                (record.public_id == public_id
                    && !is_reservation(&record)
                    && record.expires_at > now
                    && record.meta.link(name) == Some(value))
                .then(|| {
                    let mut l = Listed::of(&record);
                    l.created_at = flag_moved(l.created_at, false);
                    l
                })
            })
            .collect();
        Listed::newest(listed, limit)
    }

    /// The public ids filed under `name = value` (a copy: no lock is held
    /// once it returns).
    fn linked(&self, name: &str, value: &str) -> Vec<PublicId> {
        self.links
            .get(&self.link_key(name, value))
            .map(|ids| ids.to_vec())
            .unwrap_or_default()
    }

    pub(super) fn end_linked(&self, name: &str, value: &str, keep: Keep) -> usize {
        let ids = self.linked(name, value);
        let mut candidates: Vec<(Timestamp, PublicId)> = ids
            .into_iter()
            .map(|p| {
                // A session not found now (a cycle moving it) is still a
                // candidate: its creation time only matters to
                // `keep.newest`, and ending it waits for the cycle.
                // (The `moves` guard is released before the map is read:
                // writers take the map's lock, then `moves`'.)
                let at = self.moves.get(&p).map(|at| *at);
                let created = at
                    .and_then(|at| self.map.get(&at).map(|r| flag_moved(r.created_at, false)))
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                (created, p)
            })
            .collect();
        keep.victims(&mut candidates)
            .iter()
            .filter(|p| self.end_tracked(p, |r| r.meta.link(name) == Some(value)))
            .count()
    }

    /// Ends the linked session named `public_id` wherever it lives. A
    /// session that is tracked only because it was cycled is not the
    /// registry's to end (found by the model check).
    pub(super) fn end_public(&self, public_id: &PublicId) -> bool {
        self.end_tracked(public_id, |r| r.meta.has_links())
    }

    /// Ends the tracked (cycled or linked) session named `public_id` if
    /// `check` accepts it. Under the session's stripe lock, so no cycle of
    /// it is halfway and `moves` says where it is.
    fn end_tracked(&self, public_id: &PublicId, check: impl Fn(&Record) -> bool) -> bool {
        let _stripe = self.stripe(public_id);
        let Some(at) = self.moves.get(public_id).map(|at| *at) else {
            return false;
        };
        // Removing it forgets the move too (a tracked record has the flag).
        match self.map.remove_if(&at, |_, r| {
            r.public_id == *public_id && !is_reservation(r) && check(r)
        }) {
            Some((_, record)) => {
                self.forget(&at, &record);
                true
            }
            None => false,
        }
    }

    pub(super) fn touch(&self, id: &SessionId, Renewal { now, expires_at }: Renewal) -> bool {
        self.maintain(now);
        match self.map.get_mut(id) {
            Some(mut r) if !is_reservation(&r) && r.expires_at > now => {
                r.expires_at = r.expires_at.max(expires_at);
                true
            }
            _ => false,
        }
    }
}
