//! The reference model: what a history may and may not show, from the
//! documented semantics (README, "What it guarantees"; SECURITY.md #5,
//! #17-20, #29-31, #35).
//!
//! The oracle knows only what the clients saw: each request's id (cookie),
//! status, `Set-Cookie`, the marker (`lineage`) of the session its handler
//! loaded, the store faults injected into it, and when it started and ended
//! (a logical clock for order, tokio's clock for time). Where a request's
//! outcome is ambiguous, every rule below allows both outcomes.
//!
//! # Words
//!
//! - A **lineage** `L` is one session, whatever its id: the marker
//!   `lineage = L<op>` written by the request `<op>` that created it moves
//!   with the data through `cycle_id`. Its **creator** is that request,
//!   unless it failed cleanly (then it created nothing).
//! - `R` **saw** `L`: `R`'s handler loaded a session holding marker `L`.
//! - `R` **failed cleanly**: 5xx, and a fault was injected into one of its
//!   store calls whose failure fails a request (`load`, `create`, `save`,
//!   `cycle`, `end`; injected before forwarding, so the call changed
//!   nothing), or its handler answered 500, or a memory store at its cap
//!   refused to create (`StoreErrorKind::Full`, which creates nothing). A
//!   5xx for any other reason (a real store error, e.g. a Redis timeout) may
//!   have been applied: such a request counts as possibly having done what
//!   it asked, everywhere below.
//! - `A` **ended before** `B` **started**: `A.end_seq < B.start_seq`; they
//!   **overlap** otherwise (unless `B` ended before `A` started).
//! - Times: `I` idle timeout, `Abs` absolute timeout, `step = min(I/16, 60
//!   s)` (the refresh resolution), `M` the margin between the oracle's clock
//!   and the crate's.
//!
//! # Expiry bounds of a lineage
//!
//! - **Upper bound** `ub(L)`: `min(last + I, c.end + Abs) + M`, where `last`
//!   is the latest end of a request that saw `L` (or of its creator `c`).
//!   Only a request that loads a session can push its expiry, to at most
//!   its load time plus `I`, and never past `created_at + Abs`.
//! - **Lower bound** `lb(L)`: starts at `c.start + min(I, Abs) - M`; then,
//!   in start order, each request `R` that saw `L`, answered 2xx with no
//!   fault injected, ended before the current `lb`, and overlapped no other
//!   request moving `L` (a cycle makes `R`'s refresh miss), raises it to
//!   `min(R.start + I, c.start + Abs) - step - M`: on load the layer either
//!   found the expiry within `step` of that or refreshed it, and `R`
//!   ended while `L` was still alive, so the refresh landed. Expiry never
//!   moves back, and a store never extends an expired session.
//! - `L` is **definitely expired** at a barrier (a quiescent moment between
//!   phases, after time passed) with `now >= ub(L)` over the requests so
//!   far; **definitely alive** at the end if `end < lb(L)`.
//!
//! # Rules
//!
//! 1. **No acknowledged write is lost.** A 2xx `Write`/`WriteCycle` `W` of
//!    `k<op> = v<op>` to lineage `L` must be readable at the end under `L`'s
//!    live id, unless: `L` was destroyed (or a destroy of it may have been
//!    applied), `L` is not definitely alive at the end, another request that
//!    moves, destroys or clears `L` (and did not fail cleanly) overlapped
//!    `W` (a change set for a cycled-away id is dropped by design, to stop
//!    fixation writes; a clear racing `W` may come after it), or a clear of
//!    `L` ended after `W` started. The check is through the lineage's live
//!    id rather than the jar's last cookie: the jar can legitimately end up
//!    on another session (two tabs creating at once; a tab that wrote after
//!    its cookie was cycled away starts a new session).
//! 2. **Nothing destroyed, expired or cycled away is readable again.**
//!    - After a 2xx destroy `D` that saw `L` ended, no request sees `L`, and
//!      at the end no id holds it: not the loaded id, nor an id a racing
//!      `cycle_id` handed out (`SessionStore::end` follows the move).
//!    - After a barrier at which `L` is definitely expired, no request sees
//!      `L`, and no id holds it at the end; nor if it is definitely expired
//!      at the end.
//!    - After a 2xx cycle `C` that carried id `X`, saw a session and handed
//!      out a new id ended, a request carrying `X` sees no session, and `X`
//!      loads nothing at the end.
//!    - At the end, no lineage is live under two ids.
//!    - A 2xx destroy that saw a session expires the cookie.
//! 3. **A failed request persisted nothing.** No item written by a request
//!    that failed cleanly (its key `k<op>`, value `v<op>` or marker `L<op>`)
//!    is found anywhere: not through the layer under any id handed out or
//!    known to the store, not in the store itself; no request loads a session
//!    whose creator failed cleanly. (Requests whose 5xx came after their
//!    call was applied, injected or real, are left out.)
//! 4. **The memory store never holds more sessions than its cap**: checked
//!    by the store wrapper after every store call.
//! 5. **Last writer wins for one key.** In a definitely-alive lineage, the
//!    final value of `shared` comes from a `Shared` write to `L` that did not
//!    fail cleanly, and no *protected* `Shared` write (2xx, as in rule 1)
//!    started after that write ended; if any protected write exists, the key
//!    is present.
//! 6. A 2xx request that created a session handed out its id. On an
//!    in-process store, every 5xx is explained by an injected fault (no
//!    unexplained errors, e.g. from the layer's in-place path).
//!
//! # Links and the registry (SECURITY.md, the `SessionRegistry` docs)
//!
//! More words:
//!
//! - `W` **links** `L`: a `Write`/`WriteCycle` to `L` (it calls
//!   `link("user", u<slot % 2>)`) that did not fail cleanly. Its link is
//!   **acknowledged** when `W` answered 2xx and either created `L` (the
//!   link is in the created record) or no cycle of `L` that did not fail
//!   cleanly overlapped `W` (a change set for a cycled-away id is dropped by
//!   design). No op unlinks, and `clear` keeps links.
//! - A registry op `E` (`EndAll`, `EndOthers`, `EndAllTask`: `end_all`;
//!   `EndOne`: `end`) **targets** `L`: for `end_all`, `L`'s user is `E`'s
//!   and `L` is not the session `E` kept (`EndOthers` keeps the
//!   `public_id()` of the session it loaded); for `end`, `L` is the
//!   session whose `public_id()` requests observed as `E`'s target.
//! - `E` **was applied** when its registry call answered; **was not** when
//!   it was never made (the request failed first) or a fault was injected
//!   before it was forwarded; **may have been** otherwise (a fault after it
//!   was applied, or a real error).
//!
//! 7. **`end_all` ends every session linked before it began.** If `E` was
//!    applied, targets `L`, and a link of `L` was acknowledged before `E`
//!    started, then no request that starts after `E` ended loads `L`,
//!    whatever cycles of `L` were in flight, and at the end no id holds `L`.
//!    (A 2xx destroy is the same rule, 2; an `E` counts as a destroy
//!    everywhere below.)
//! 8. **`end_all` ends nothing else.** `E` may end `L` only if it targets
//!    `L` and some request linking `L` started before `E` ended: a session
//!    never linked, linked to the other user, linked only after `E`
//!    returned (signed in after), or the session `EndOthers` kept is never
//!    ended by `E`. Checked through rules 1 and 5: such an `E` is not a
//!    destroy of `L` there, so `L`'s acknowledged writes must survive it.
//!    And the count `end_all` answers is at most the number of sessions
//!    it may have ended.
//! 9. **`EndOthers` never ends the keeping tab's own session** (rule 8 with
//!    the keep).
//! 10. **`end` ends exactly that session**: applied, with a link of its
//!     target acknowledged before it started, the target is never loaded
//!     by a request that starts after it ended nor alive at the end (as
//!     rule 7); no other session counts as destroyed by it (rule 8); and
//!     `true` only if some request linking the target started before it
//!     ended (`end` ends linked sessions only).
//! 11. **Public ids name sessions.** Every request that loaded `L` saw the
//!     same `public_id()` (stable across `cycle_id`), two sessions never
//!     share one, and a loaded session always has one.
//! 12. On an in-process store a registry call fails only by an injected
//!     fault; on any store, a registry call failing for real (no fault
//!     injected into it) is reported: the store cannot do what the
//!     registry promises.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{user_of, Applied, Barrier, Figures, Final, Kind, Req, Setup, SHARED};

struct Model<'a> {
    setup: &'a Setup,
    creator: HashMap<&'a str, &'a Req>,
    by_lineage: HashMap<&'a str, Vec<&'a Req>>,
}

impl<'a> Model<'a> {
    fn new(setup: &'a Setup, reqs: &'a [Req]) -> Self {
        let mut creator = HashMap::new();
        let mut by_lineage: HashMap<&str, Vec<&Req>> = HashMap::new();
        for r in reqs {
            // A 5xx that did not fail cleanly may have created it too.
            if let (true, Some(l)) = (!r.failed_cleanly(), r.created.as_deref()) {
                creator.insert(l, r);
            }
            if let Some(l) = r.seen.as_deref() {
                by_lineage.entry(l).or_default().push(r);
            }
        }
        for v in by_lineage.values_mut() {
            v.sort_by_key(|r| r.start_seq);
        }
        Self {
            setup,
            creator,
            by_lineage,
        }
    }

    fn saw(&self, l: &str) -> &[&'a Req] {
        self.by_lineage.get(l).map_or(&[], Vec::as_slice)
    }

    /// `ub(L)` over the requests that ended before `before_seq`.
    fn ub(&self, l: &str, before_seq: u64) -> Option<u64> {
        let c = self.creator.get(l)?;
        if c.end_seq >= before_seq {
            return None;
        }
        let last = self
            .saw(l)
            .iter()
            .filter(|r| r.end_seq < before_seq)
            .map(|r| r.end_ms)
            .max()
            .unwrap_or(0)
            .max(c.end_ms);
        let s = self.setup;
        Some((last + s.idle_ms()).min(c.end_ms + s.absolute_ms()) + s.margin_ms)
    }

    /// `ub(L)` as if there were no absolute timeout (for the figures).
    fn ub_idle_only(&self, l: &str, before_seq: u64) -> Option<u64> {
        let c = self.creator.get(l)?;
        let last = self
            .saw(l)
            .iter()
            .filter(|r| r.end_seq < before_seq)
            .map(|r| r.end_ms)
            .max()
            .unwrap_or(0)
            .max(c.end_ms);
        Some(last + self.setup.idle_ms() + self.setup.margin_ms)
    }

    /// `lb(L)` over the whole history.
    fn lb(&self, l: &str) -> Option<u64> {
        let c = self.creator.get(l)?;
        let s = self.setup;
        let (i, a, m) = (s.idle_ms(), s.absolute_ms(), s.margin_ms);
        let mut lb = (c.start_ms + i.min(a)).saturating_sub(m);
        for r in self.saw(l) {
            if !r.ok() || r.faults > 0 || r.end_ms >= lb {
                continue;
            }
            let moved = self
                .saw(l)
                .iter()
                .any(|o| o.op != r.op && o.kind.cycles() && !o.failed_cleanly() && o.overlaps(r));
            if moved {
                continue;
            }
            let cand = (r.start_ms + i)
                .min(c.start_ms + a)
                .saturating_sub(s.step_ms() + m);
            lb = lb.max(cand);
        }
        Some(lb)
    }

    /// Whether a request other than `w` that moves, destroys or clears `l`
    /// (and did not fail cleanly) overlapped `w`, or a clear of `l` ended
    /// after `w` started.
    fn disrupted(&self, l: &str, w: &Req) -> bool {
        self.saw(l).iter().any(|r| {
            r.op != w.op
                && r.kind.disrupts()
                && !r.failed_cleanly()
                && (r.overlaps(w) || (r.kind == Kind::Clear && r.end_seq > w.start_seq))
        })
    }
}

/// The session an `EndOthers` kept: the one it loaded (its `public_id()`).
fn kept(e: &Req) -> Option<&str> {
    (e.kind == Kind::EndOthers && e.public_id.is_some())
        .then_some(e.seen.as_deref())
        .flatten()
}

fn op_of(s: &str, prefix: char) -> Option<u64> {
    s.strip_prefix(prefix)?.parse().ok()
}

/// Checks one history; returns the violations (empty: it passed).
pub(crate) fn check(
    setup: &Setup,
    reqs: &[Req],
    barriers: &[Barrier],
    fin: &Final,
    figures: &mut Figures,
) -> Vec<String> {
    let m = Model::new(setup, reqs);
    let mut v = Vec::new();
    let lineages: Vec<&str> = m.creator.keys().copied().collect();

    // Rule 6, and the sanity of destroys (rule 2, last point).
    for r in reqs {
        if r.ok() && r.created.is_some() && !matches!(r.set_cookie, Some(Some(_))) {
            v.push(format!(
                "rule 6: #{} created session {} and answered {} without handing out its id",
                r.op,
                r.created.as_deref().unwrap_or("?"),
                r.status
            ));
        }
        if setup.in_process && r.status >= 500 && !r.failed_cleanly() && r.applied_faults == 0 {
            v.push(format!(
                "#{} answered {} ({:?}) though no fault was injected into it and the store is \
                 in-process",
                r.op, r.status, r.store_error
            ));
        }
        if r.kind == Kind::Destroy && r.ok() && r.seen.is_some() && r.set_cookie != Some(None) {
            v.push(format!(
                "rule 2: destroy #{} answered {} without expiring the cookie (Set-Cookie {:?})",
                r.op, r.status, r.set_cookie
            ));
        }
    }

    // When each lineage ended, as far as the oracle is sure.
    let mut destroyed: HashMap<&str, &Req> = HashMap::new();
    let mut maybe_destroyed: HashSet<&str> = HashSet::new();
    for r in reqs {
        if let (Kind::Destroy, Some(l)) = (r.kind, r.seen.as_deref()) {
            if !r.failed_cleanly() {
                maybe_destroyed.insert(l);
            }
            if r.ok() {
                let e = destroyed.entry(l).or_insert(r);
                if r.end_seq < e.end_seq {
                    *e = r;
                }
            }
        }
    }
    // Links, public ids and the registry (rules 7 to 12).
    let mut pid_of: HashMap<&str, &str> = HashMap::new();
    let mut lineage_of_pid: HashMap<&str, &str> = HashMap::new();
    for r in reqs {
        let Some(l) = r.seen.as_deref() else { continue };
        let Some(p) = r.public_id.as_deref() else {
            v.push(format!(
                "rule 11: #{} loaded session {l} but public_id() is None",
                r.op
            ));
            continue;
        };
        match pid_of.get(l) {
            Some(q) if *q != p => v.push(format!(
                "rule 11: session {l} showed public id {q:.8} and then {p:.8} (#{})",
                r.op
            )),
            _ => {
                pid_of.insert(l, p);
            }
        }
        match lineage_of_pid.get(p) {
            Some(k) if *k != l => v.push(format!(
                "rule 11: sessions {k} and {l} share the public id {p:.8} (#{})",
                r.op
            )),
            _ => {
                lineage_of_pid.insert(p, l);
            }
        }
    }
    let user_of_lineage = |l: &str| m.creator.get(l).map(|c| user_of(c.slot));
    // Per lineage: when a request linking it first started, and when a
    // link of it was first acknowledged (`end_seq`).
    let mut first_link: HashMap<&str, u64> = HashMap::new();
    let mut acked: HashMap<&str, u64> = HashMap::new();
    for w in reqs {
        let Some(l) = w.lineage() else { continue };
        if !w.kind.links() || w.failed_cleanly() {
            continue;
        }
        let e = first_link.entry(l).or_insert(w.start_seq);
        *e = (*e).min(w.start_seq);
        let acknowledged = w.ok()
            && (w.created.as_deref() == Some(l)
                || !m.saw(l).iter().any(|o| {
                    o.op != w.op && o.kind.cycles() && !o.failed_cleanly() && o.overlaps(w)
                }));
        if acknowledged {
            let e = acked.entry(l).or_insert(w.end_seq);
            *e = (*e).min(w.end_seq);
        }
    }
    let acked_link = |l: &str| acked.get(l).copied();
    let maybe_linked_before = |l: &str, seq: u64| first_link.get(l).is_some_and(|s| *s < seq);
    let targets = |e: &Req, l: &str| -> bool {
        if e.kind == Kind::EndOne {
            e.target
                .as_deref()
                .and_then(|t| lineage_of_pid.get(t))
                .is_some_and(|t| *t == l)
        } else {
            user_of_lineage(l) == Some(e.user) && kept(e) != Some(l)
        }
    };
    // Lineage -> the first registry op that must have ended it.
    let mut ended_by: HashMap<&str, &Req> = HashMap::new();
    let mut registry_ops = Vec::new();
    for e in reqs.iter().filter(|e| e.kind.ends()) {
        if let Some(res) = &e.reg {
            figures.registry_calls += 1;
            if res.is_ok() {
                figures.registry_ok += 1;
            }
        }
        if let Some(Err(msg)) = &e.reg {
            if e.reg_before == 0 && e.reg_after == 0 {
                v.push(format!(
                    "rule 12: the registry call of #{} ({:?}) failed with no fault injected \
                     into it: {msg}",
                    e.op, e.kind
                ));
            }
        }
        let applied = e.applied();
        if applied == Applied::No {
            continue;
        }
        registry_ops.push(e);
        let mut may_end = 0u64;
        for &l in &lineages {
            if !targets(e, l) || !maybe_linked_before(l, e.end_seq) {
                continue;
            }
            may_end += 1;
            maybe_destroyed.insert(l);
            if applied == Applied::Yes && acked_link(l).is_some_and(|a| a < e.start_seq) {
                let x = ended_by.entry(l).or_insert(e);
                if e.end_seq < x.end_seq {
                    *x = e;
                }
            }
        }
        if let Some(Ok(n)) = &e.reg {
            if *n > may_end {
                let (rule, what) = if e.kind == Kind::EndOne {
                    (10, "end".to_owned())
                } else {
                    (8, format!("{:?} of user u{}", e.kind, e.user))
                };
                v.push(format!(
                    "rule {rule}: #{} ({what}) answered {n} ended, but at most {may_end} \
                     sessions it targets were linked before it ended",
                    e.op
                ));
            }
        }
    }
    for (&l, e) in &ended_by {
        figures.ended_checked += 1;
        figures.end_cycle_races += m
            .saw(l)
            .iter()
            .filter(|c| c.kind.cycles() && c.overlaps(e))
            .count() as u64;
    }
    let rule_of = |e: &Req| if e.kind == Kind::EndOne { 10 } else { 7 };

    let mut expired_at: HashMap<&str, &Barrier> = HashMap::new();
    for &l in &lineages {
        for b in barriers {
            if m.ub(l, b.seq).is_some_and(|ub| b.now_ms >= ub) {
                expired_at.insert(l, b);
                figures.expired_sessions += 1;
                if m.ub_idle_only(l, b.seq).is_some_and(|ub| b.now_ms < ub) {
                    figures.expired_by_absolute += 1;
                }
                break;
            }
        }
    }
    let expired_at_end: HashSet<&str> = lineages
        .iter()
        .copied()
        .filter(|l| {
            expired_at.contains_key(l) || m.ub(l, u64::MAX).is_some_and(|ub| fin.end_ms >= ub)
        })
        .collect();
    // Ids cycled away: id -> the cycle that moved the session off it.
    let mut cycled_away: HashMap<&str, &Req> = HashMap::new();
    for r in reqs {
        if let (true, true, Some(_), Some(x), Some(Some(_))) = (
            r.kind.cycles(),
            r.ok(),
            r.seen.as_deref(),
            r.cookie.as_deref(),
            &r.set_cookie,
        ) {
            let e = cycled_away.entry(x).or_insert(r);
            if r.end_seq < e.end_seq {
                *e = r;
            }
        }
    }

    // Rule 2, during the run.
    for r in reqs {
        if let Some(x) = r.cookie.as_deref() {
            if let (Some(c), Some(l)) = (cycled_away.get(x), r.seen.as_deref()) {
                if c.end_seq < r.start_seq {
                    v.push(format!(
                        "rule 2: #{} carried id {x:.8}, cycled away by #{} (2xx, ended before \
                         #{} started), and still loaded session {l}",
                        r.op, c.op, r.op
                    ));
                }
            }
        }
        let Some(l) = r.seen.as_deref() else { continue };
        if let Some(d) = destroyed.get(l) {
            if d.end_seq < r.start_seq {
                v.push(format!(
                    "rule 2: #{} loaded session {l}, which destroy #{} ended (2xx) before #{} \
                     started",
                    r.op, d.op, r.op
                ));
            }
        }
        if let Some(e) = ended_by.get(l) {
            if e.end_seq < r.start_seq {
                v.push(format!(
                    "rule {}: #{} loaded session {l}, which #{} ({:?}, answered {:?}) must have \
                     ended (its link was acknowledged before #{} started) before #{} started",
                    rule_of(e),
                    r.op,
                    e.op,
                    e.kind,
                    e.reg,
                    e.op,
                    r.op
                ));
            }
        }
        if let Some(b) = expired_at.get(l) {
            if b.seq < r.start_seq {
                v.push(format!(
                    "rule 2: #{} loaded session {l}, definitely expired at the barrier of \
                     t={} ms (seq {})",
                    r.op, b.now_ms, b.seq
                ));
            }
        }
        if !m.creator.contains_key(l) {
            v.push(format!(
                "rule 3: #{} loaded session {l}, whose creating request failed (5xx, cleanly)",
                r.op
            ));
        }
    }

    // Rule 2, at the end.
    let mut live: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, rep) in &fin.probes {
        let dead_by_cycle = cycled_away.get(id.as_str());
        let l = rep.seen.as_deref();
        let expected_dead = dead_by_cycle.is_some()
            || l.is_some_and(|l| {
                destroyed.contains_key(l) || expired_at_end.contains(l) || ended_by.contains_key(l)
            });
        if expected_dead {
            figures.dead_ids_checked += 1;
        }
        let Some(l) = l else { continue };
        live.entry(l).or_default().push(id);
        if let Some(c) = dead_by_cycle {
            v.push(format!(
                "rule 2: id {id:.8} was cycled away by #{} (2xx) yet holds session {l} at the end",
                c.op
            ));
        }
        if let Some(d) = destroyed.get(l) {
            v.push(format!(
                "rule 2: session {l} was destroyed by #{} (2xx) yet is alive under id {id:.8} at \
                 the end",
                d.op
            ));
        }
        if let Some(e) = ended_by.get(l) {
            v.push(format!(
                "rule {}: session {l} was ended by #{} ({:?}, answered {:?}; its link was \
                 acknowledged before) yet is alive under id {id:.8} at the end",
                rule_of(e),
                e.op,
                e.kind,
                e.reg
            ));
        }
        if expired_at_end.contains(l) {
            v.push(format!(
                "rule 2: session {l} is definitely expired (ub {:?} ms, end {} ms) yet alive under \
                 id {id:.8}",
                m.ub(l, u64::MAX),
                fin.end_ms
            ));
        }
        if !m.creator.contains_key(l) {
            v.push(format!(
                "rule 3: session {l} is alive under id {id:.8}, but its creating request \
                 failed (5xx, cleanly)"
            ));
        }
    }
    for (l, ids) in &live {
        if ids.len() > 1 {
            let ids: Vec<String> = ids.iter().map(|i| format!("{i:.8}")).collect();
            v.push(format!(
                "rule 2: session {l} is alive under several ids: {ids:?}"
            ));
        }
    }

    // Rule 10: `end` answered true only for a linked session.
    for e in reqs.iter().filter(|e| e.kind == Kind::EndOne) {
        if e.reg != Some(Ok(1)) {
            continue;
        }
        let t = e
            .target
            .as_deref()
            .and_then(|t| lineage_of_pid.get(t).copied());
        if !t.is_some_and(|t| maybe_linked_before(t, e.end_seq)) {
            v.push(format!(
                "rule 10: end #{} of public id {:.8} (session {}) answered true, but no request \
                 linking that session started before it ended",
                e.op,
                e.target.as_deref().unwrap_or("?"),
                t.unwrap_or("?")
            ));
        }
    }

    // Rule 3.
    let failed: HashSet<u64> = reqs
        .iter()
        .filter(|r| r.failed_cleanly())
        .map(|r| r.op)
        .collect();
    let probe_items = fin.probes.iter().flat_map(|(id, rep)| {
        rep.values
            .iter()
            .map(move |(k, val)| (id.as_str(), "probe", k.as_str(), val.as_str()))
    });
    let scan_items = fin.scan.iter().flat_map(|(id, items)| {
        items
            .iter()
            .map(move |(k, val)| (id.as_str(), "store", k.as_str(), val.as_str()))
    });
    let mut reported = HashSet::new();
    for (id, how, k, val) in probe_items.chain(scan_items) {
        let ops = [op_of(k, 'k'), op_of(val, 'v'), op_of(val, 'L')];
        for op in ops.into_iter().flatten() {
            if failed.contains(&op) && reported.insert(op) {
                v.push(format!(
                    "rule 3: #{op} failed (5xx) yet its item {k}={val} is in the {how} under id \
                     {id:.8}"
                ));
            }
        }
    }

    // Rules 1 and 5.
    let alive_at_end = |l: &str| {
        !maybe_destroyed.contains(l)
            && !expired_at_end.contains(l)
            && m.lb(l).is_some_and(|lb| fin.end_ms < lb)
    };
    let values_of = |l: &str| -> Option<&Vec<(String, String)>> {
        let ids = live.get(l)?;
        let id = ids.first()?;
        fin.probes
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, rep)| &rep.values)
    };
    for w in reqs {
        if !(w.ok() && matches!(w.kind, Kind::Write | Kind::WriteCycle)) {
            continue;
        }
        let Some(l) = w.lineage() else {
            v.push(format!("#{} wrote without a lineage (test bug)", w.op));
            continue;
        };
        if !alive_at_end(l) || m.disrupted(l, w) {
            continue;
        }
        figures.protected_writes_checked += 1;
        if registry_ops.iter().any(|e| {
            e.overlaps(w) || e.start_seq > w.end_seq
        } && (e.kind == Kind::EndOne || Some(e.user) == user_of_lineage(l)))
        {
            figures.spared_checked += 1;
        }
        let (key, val) = (format!("k{}", w.op), format!("v{}", w.op));
        match values_of(l) {
            None => v.push(format!(
                "rule 1: #{} wrote {key}={val} (2xx) to session {l}, which is gone at the end \
                 (no id holds it), though nothing destroyed, expired or raced it",
                w.op
            )),
            Some(values) => {
                if !values.iter().any(|(k, x)| *k == key && *x == val) {
                    v.push(format!(
                        "rule 1: #{} wrote {key}={val} (2xx) to session {l}; at the end the \
                         session is alive but the item is {:?}",
                        w.op,
                        values.iter().find(|(k, _)| *k == key).map(|(_, x)| x)
                    ));
                }
            }
        }
    }
    for &l in &lineages {
        if !alive_at_end(l) {
            continue;
        }
        let Some(values) = values_of(l) else { continue };
        let writes: Vec<&Req> = reqs
            .iter()
            .filter(|r| r.kind == Kind::Shared && r.lineage() == Some(l))
            .collect();
        let protected: Vec<&Req> = writes
            .iter()
            .copied()
            .filter(|p| p.ok() && !m.disrupted(l, p))
            .collect();
        let fin_val = values.iter().find(|(k, _)| k == SHARED).map(|(_, x)| x);
        match fin_val {
            None => {
                if let Some(p) = protected.first() {
                    v.push(format!(
                        "rule 5: #{} wrote {SHARED}=v{} (2xx, undisturbed) to session {l}; at \
                         the end the key is absent",
                        p.op, p.op
                    ));
                }
            }
            Some(x) => {
                let q = writes
                    .iter()
                    .find(|r| op_of(x, 'v') == Some(r.op) && !r.failed_cleanly());
                match q {
                    None => v.push(format!(
                        "rule 5: session {l} ends with {SHARED}={x}, which no surviving write to \
                         it made"
                    )),
                    Some(q) => {
                        if let Some(p) = protected.iter().find(|p| p.start_seq > q.end_seq) {
                            v.push(format!(
                                "rule 5: session {l} ends with {SHARED}={x} from #{}, but #{} \
                                 (2xx, undisturbed) wrote v{} after #{} ended",
                                q.op, p.op, p.op, q.op
                            ));
                        }
                    }
                }
            }
        }
    }

    // Coverage: how often a destroy raced a cycle of the same session.
    for d in reqs.iter().filter(|r| r.kind == Kind::Destroy) {
        let Some(l) = d.seen.as_deref() else { continue };
        figures.destroy_cycle_races += m
            .saw(l)
            .iter()
            .filter(|c| c.kind.cycles() && c.overlaps(d))
            .count() as u64;
    }
    v
}
