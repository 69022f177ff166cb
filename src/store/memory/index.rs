//! The expiry index (a wheel of one-second buckets) and the upkeep every
//! operation does: sweeping due sessions, compacting stale ids, shrinking.

use super::*;

impl Inner {
    pub(super) fn wheel(&self) -> MutexGuard<'_, Wheel> {
        self.wheel.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock `cycle` and `end` take for the session named `public_id`.
    pub(super) fn stripe(&self, public_id: &PublicId) -> MutexGuard<'_, ()> {
        let i = self.moves.hasher().hash_one(public_id) as usize % self.stripes.len();
        self.stripes[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set_next_due(&self, wheel: &Wheel) {
        let due = wheel
            .chunks
            .first_key_value()
            .map_or(u64::MAX, |((b, _), _)| b.saturating_mul(1000));
        self.next_due.store(due, Ordering::Relaxed);
        self.filed.store(wheel.ids, Ordering::Relaxed);
    }

    /// Files ids under the seconds given with them.
    pub(super) fn file(&self, entries: impl IntoIterator<Item = (u64, SessionId)>) {
        let mut wheel = self.wheel();
        for (b, id) in entries {
            wheel.ids += 1;
            let last = wheel.chunks.range_mut((b, 0)..=(b, u32::MAX)).next_back();
            let seq = match last {
                Some((_, ids)) if ids.len() < CHUNK => {
                    ids.push(id);
                    continue;
                }
                Some(((_, seq), _)) => seq.wrapping_add(1),
                None => 0,
            };
            wheel.chunks.insert((b, seq), vec![id]);
        }
        self.set_next_due(&wheel);
    }

    /// Accounts for a session just removed from the map (its guard
    /// released): gives its place back, and forgets where it moved if it
    /// was cycled. Takes no stripe lock: a cycle that would move this
    /// session finds it gone, and `end` only deletes what it finds.
    pub(super) fn forget(&self, id: &SessionId, record: &Record) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        telemetry::memory_sessions(false);
        if is_moved(record.created_at) {
            self.moves.remove_if(&record.public_id, |_, at| at == id);
        }
        for (name, value) in record.meta.links() {
            self.unindex(name, value, &record.public_id);
        }
    }

    /// Files the session `public_id` under the link `name = value`.
    pub(super) fn index(&self, name: &str, value: &str, public_id: PublicId) {
        match self.links.entry(self.link_key(name, value)) {
            Entry::Occupied(mut e) => e.get_mut().push(public_id),
            Entry::Vacant(e) => {
                e.insert(Linked::One(public_id));
            }
        }
    }

    /// The index key of the link `name = value`.
    pub(super) fn link_key(&self, name: &str, value: &str) -> u64 {
        self.link_hasher.hash_one((name, value))
    }

    /// Takes the session `public_id` out of the link `name = value`'s
    /// entry, and the entry out of the index when it is left empty.
    pub(super) fn unindex(&self, name: &str, value: &str, public_id: &PublicId) {
        let key = self.link_key(name, value);
        if let Entry::Occupied(mut e) = self.links.entry(key) {
            if e.get_mut().remove(public_id) {
                e.remove();
            }
        }
    }

    /// Brings the link index up to date for `changes` applied to a session
    /// whose links were `before`, and applies them to its meta. A session
    /// that holds a link afterwards is tracked in `moves` (so the registry
    /// finds it by its public id): `Some(id)` tracks it under `id` now;
    /// `None` leaves that to the caller (a cycle, which tracks every
    /// session it moves).
    pub(super) fn relink(&self, record: &mut Record, changes: &ChangeSet, at: Option<&SessionId>) {
        if !changes.changes_meta() {
            return;
        }
        for (name, value) in changes.links() {
            let old = record.meta.link(name);
            if old == value {
                continue;
            }
            if let Some(v) = value {
                self.index(name, v, record.public_id);
            }
            if let Some(old) = old {
                self.unindex(name, old, &record.public_id);
            }
        }
        record.meta.apply(changes);
        if let Some(id) = at {
            if record.meta.has_links() && !is_moved(record.created_at) {
                self.moves.insert(record.public_id, *id);
                record.created_at = flag_moved(record.created_at, true);
            }
        }
    }

    /// The small amount of upkeep every operation does: reclaim a few due
    /// sessions, compact a few chunks of the index while it holds too many
    /// stale ids, give back a few shards' spare capacity after the store
    /// shrank. A few atomic loads when there is nothing to do.
    pub(super) fn maintain(&self, now: Timestamp) {
        if now.as_millis() >= self.next_due.load(Ordering::Relaxed) {
            self.sweep(now, SWEEP_BUDGET, false);
        }
        let live = self.len.load(Ordering::Relaxed);
        if self.filed.load(Ordering::Relaxed) > live.saturating_mul(2).saturating_add(INDEX_SLACK) {
            self.compact();
        }
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= SHRINK_MIN_PEAK && live.saturating_mul(4) < peak {
            self.shrink_step(live);
        }
    }

    /// Examines up to `budget` sessions filed under due seconds: removes the
    /// expired ones, files the refreshed ones again, drops stale ids. Returns
    /// how many it examined. With `wait == false` it gives way to a sweep
    /// already running.
    pub(super) fn sweep(&self, now: Timestamp, budget: usize, wait: bool) -> usize {
        self.sweep_until(now, now, budget, wait)
    }

    /// [`sweep`](Self::sweep), taking the seconds filed up to `due` (at or
    /// after `now`); only sessions expired at `now` are removed.
    pub(super) fn sweep_until(
        &self,
        now: Timestamp,
        due: Timestamp,
        budget: usize,
        wait: bool,
    ) -> usize {
        // On the stack: no allocation for the batch. The one large request
        // a step makes is the deliberate one after it freed sessions
        // (`settle_allocator`), when the blocks to merge are few.
        let mut batch = [SessionId::NIL; MAX_BATCH];
        let mut n = 0;
        let budget = budget.min(MAX_BATCH);
        {
            let mut wheel = if wait {
                self.wheel()
            } else {
                match self.wheel.try_lock() {
                    Ok(w) => w,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return 0,
                }
            };
            while n < budget {
                let Some(mut first) = wheel.chunks.first_entry() else {
                    break;
                };
                if first.key().0.saturating_mul(1000) > due.as_millis() {
                    break;
                }
                let ids = first.get_mut();
                let take = (budget - n).min(ids.len());
                for id in ids.drain(ids.len() - take..) {
                    batch[n] = id;
                    n += 1;
                }
                if ids.is_empty() {
                    first.remove();
                }
                wheel.ids -= take;
            }
            self.set_next_due(&wheel);
        }
        let mut refile = [(0u64, SessionId::NIL); MAX_BATCH];
        let mut r = 0;
        let mut removed = 0;
        for &id in &batch[..n] {
            let Entry::Occupied(e) = self.map.entry(id) else {
                continue; // stale: the session went before it expired
            };
            let record = e.get();
            if is_reservation(record) {
                continue; // a cycle's new id, not filed yet
            }
            if record.expires_at <= now {
                let record = e.remove();
                self.forget(&id, &record);
                drop(record);
                removed += 1;
            } else {
                refile[r] = (bucket_of(record.expires_at), id);
                r += 1;
            }
        }
        if r > 0 {
            self.file(refile[..r].iter().copied());
        }
        if removed > 0 {
            telemetry::memory_reclaimed(removed);
            settle_allocator();
        }
        n
    }

    /// One compaction step: takes a few chunks of the index, from where the
    /// last step stopped, and puts back only the ids still filed there.
    /// Gives way to anyone holding the index.
    pub(super) fn compact(&self) {
        let mut examined = 0;
        for _ in 0..COMPACT_CHUNKS {
            if examined >= COMPACT_BUDGET {
                break;
            }
            let (key, mut ids) = {
                let Ok(mut wheel) = self.wheel.try_lock() else {
                    return;
                };
                let next = wheel
                    .chunks
                    .range(wheel.cursor..)
                    .next()
                    .or_else(|| wheel.chunks.first_key_value())
                    .map(|(k, _)| *k);
                let Some(key) = next else {
                    return;
                };
                let Some(ids) = wheel.chunks.remove(&key) else {
                    return;
                };
                wheel.ids -= ids.len();
                wheel.cursor = match key.1.checked_add(1) {
                    Some(seq) => (key.0, seq),
                    None => (key.0.saturating_add(1), 0),
                };
                self.set_next_due(&wheel);
                (key, ids)
            };
            examined += ids.len();
            ids.retain(|id| self.map.get(id).is_some_and(|r| !is_reservation(&r)));
            if ids.is_empty() {
                continue;
            }
            // Back under the same key, behind the cursor: this pass does not
            // see them again.
            let mut wheel = self.wheel();
            wheel.ids += ids.len();
            match wheel.chunks.entry(key) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(ids);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.get_mut().append(&mut ids);
                }
            }
            self.set_next_due(&wheel);
        }
    }

    /// Gives back the spare capacity of a few shards (of both maps). Each
    /// shard is rebuilt for what it holds now under its own lock, which
    /// costs what that shard holds (a couple of thousand entries at most).
    /// After a whole pass, the peak is what the store holds now.
    pub(super) fn shrink_step(&self, live: usize) {
        let shards = self.map.shards().len();
        for _ in 0..SHRINK_SHARDS_PER_OP {
            let i = self.shrink_cursor.fetch_add(1, Ordering::Relaxed) % shards;
            {
                let hasher = self.map.hasher();
                let mut shard = self.map.shards()[i].write();
                let len = shard.len();
                if shard.capacity() > 2 * len + 8 {
                    shard.shrink_to(len, |(k, _)| hasher.hash_one(k));
                }
            }
            if let Some(shard) = self.moves.shards().get(i) {
                let hasher = self.moves.hasher();
                let mut shard = shard.write();
                let len = shard.len();
                if shard.capacity() > 2 * len + 8 {
                    shard.shrink_to(len, |(k, _)| hasher.hash_one(k));
                }
            }
            if i + 1 == shards {
                self.peak.store(live, Ordering::Relaxed);
                return;
            }
        }
    }
}
