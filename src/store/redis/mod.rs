//! [`RedisStore`]: sessions in Redis or Redis Cluster, shared by every app
//! instance that talks to the same server (feature `redis`).
//!
//! # Data model
//!
//! - **One hash per session**, under the key `{prefix}{<id>}`, e.g.
//!   `session:{0b1ed8b0-5bd4-4b5c-9d2c-6f2b0fd2c9a1}`. The id sits inside a
//!   hash tag (`{…}`), so on Redis Cluster the whole session lives in one
//!   slot and every script below touches one slot only.
//! - **One field per item**, name and value stored verbatim: a 6 KB JWT goes
//!   in and comes back byte for byte, and `HGET session:{<id>} user_id` works
//!   from `redis-cli`.
//! - **Metadata in fields no item can have.** The session's creation time
//!   (the absolute timeout counts from it; decimal milliseconds since the
//!   Unix epoch) and its [`PublicId`] (32 lowercase hex digits) are kept in
//!   the fields `"\xffc"` and `"\xffu"`. Their names start with the byte
//!   `0xFF`, which never occurs in UTF-8, and item names are Rust `&str`s:
//!   so no item name can ever collide with them, whatever the application
//!   stores. They are two bytes long because every session stores them
//!   (see [Memory](#memory-and-eviction)). A hash missing either, or
//!   holding one that does not parse, is corrupt (see [Failures](#failures));
//!   that includes sessions stored by versions before the public id was
//!   kept. Other `0xFF` fields than those below are ignored (a later
//!   version's).
//! - **The key's TTL is the expiry**: `PEXPIREAT` to the session's
//!   `expires_at`, moved forward only, and read back with `PEXPIRETIME`
//!   (in the same pipeline as `HGETALL`). Redis forgets a session when it
//!   expires; no sweeper is needed. A session key without a TTL was not
//!   written by the store: corrupt.
//! - **The layout before this one** (`"\xffcreated_at"`,
//!   `"\xffexpires_at"`, `"\xffpublic_id"`, the expiry also in the hash)
//!   is still read, so an upgrade keeps everyone signed in; the session's
//!   next write (any of save, touch, cycle) rewrites it to the current
//!   layout in the same script.
//! - **A move pointer per moved or linked session**:
//!   `{prefix}moved:{<public id>}`, a string holding the session's current
//!   id, written by `cycle` (and by the first write that links a session)
//!   and followed by `end` (a logout racing a `cycle_id`) and by the
//!   registry. It expires with the session as it was at the move (a linked
//!   session's: at its [horizon](#links-and-the-registry) or later), and a
//!   logout deletes it; see [below](#logout-and-cycle_id).
//! - **Links and lifetime settings in the hash** (see
//!   [`Meta`](crate::store::Meta)): `"\xffl"` holds every link as
//!   `name US value RS name US value` (ASCII unit and record separators,
//!   control characters no name or value can hold), `"\xffi"` the
//!   session's own idle timeout in milliseconds, `"\xffp"` its cookie
//!   persistence (`1`/`0`), and `"\xffh"` (while it has links) its
//!   *horizon*: the time until which its index keys and move pointer are
//!   known to live. Each is absent when unset.
//! - **An index per link**: `{prefix}link:<name>:{<value>}`, a sorted set
//!   of the public ids of the sessions linked so, each scored by the time
//!   (the app's clock, milliseconds) of the latest write that indexed it.
//!   Unambiguous: a name holds no `:` (nor braces), so the name ends at the
//!   first `:` after `link:`, and the value is everything between the next
//!   `{` and the key's last `}` (a value may hold `{`, `}` and `:`). On
//!   Cluster the hash tag is the value up to its first `}` (or the whole key
//!   when that is empty): one link's index is one key in one slot wherever
//!   its sessions live. See [Links and the registry](#links-and-the-registry).
//!
//! # Operations, and what each costs
//!
//! | Operation | Round trips | How |
//! |---|---|---|
//! | load | 1 | `HGETALL` + `PEXPIRETIME` (one pipeline) |
//! | save, item sets only (the common write) | 1 | a small Lua script: `PEXPIRETIME`, `HMGET`, `HSET`, `PEXPIREAT` |
//! | save (any other change set) | 1 | a Lua script (`EVALSHA`) |
//! | create (insert-if-absent) | 1 | a Lua script: `EXISTS`, then `HSET` + `PEXPIREAT` |
//! | touch (idle refresh) | 1 | a Lua script: `PEXPIREAT` only if it moves forward |
//! | delete | 1 | `DEL` |
//! | cycle, standalone | 1 | a Lua script: check, `RENAME`, apply, expire, point |
//! | end, standalone | 1 | a Lua script: `DEL`, follow the pointer, `DEL` both |
//! | cycle, Cluster | 3 | take the old session, create the new one, point (scripts) |
//! | end, Cluster | 2 or 3 | `DEL`; then drop the pointer, or mark it and `DEL` its target |
//! | a write that links (sign-in) | +2 | a first script answers "index first"; the index step (one batch); the script again |
//! | a refresh past the horizon (linked sessions, about once per idle timeout) | +2 | as above |
//! | list (any number of sessions) | 3 (+2 to prune) | `ZRANGE`; the pointers (`GET`, one batch); the sessions (`HMGET`, one batch) |
//! | end_linked | 5 (+2 to prune) | as list; the ends (one batch); `ZREM` (one batch) |
//! | end_public | 2, Cluster 3 | the end (one script; on Cluster: mark, then delete); `ZREM` |
//!
//! A batch is one pipeline on a standalone server, and on a Cluster every
//! command at once on the multiplexed connections: one round trip per node.
//! Measured through a counting proxy, 50 sessions of one user: `list` in 3
//! round trips (101 commands), `end_linked` in 5 (152 commands).
//!
//! So a request that only reads costs one round trip, and a request that
//! writes costs two (load, then save). Scripts are sent as `EVALSHA`; when
//! the server does not know the script (first use, or after a restart), the
//! store falls back to `EVAL` with the script's text, which also caches it.
//! [`connect`](RedisStore::connect) preloads the scripts with `SCRIPT LOAD`.
//!
//! Every script that writes checks first that the session still exists (and
//! has not expired), so a change set arriving after a logout or after
//! `cycle_id` is dropped ([`SaveOutcome::Gone`]) and never re-creates the
//! session. A change set that leaves no items deletes the key.
//!
//! # Logout and `cycle_id`
//!
//! A logout ([`SessionStore::end`]) must end the session even when a
//! concurrent request has just moved it to a new id with `cycle_id`
//! (request L loads session A with public id P and calls `destroy`;
//! meanwhile request C moves A to N and answers first, handing out N; then
//! L's `end(A, P)` arrives). So every move also writes the *move pointer*
//! `{prefix}moved:{<P>}` = N, and `end` follows it.
//!
//! On a standalone server both are one script each, so they are atomic with
//! respect to each other: `cycle` renames A to N and sets the pointer (its
//! name read from the hash's public id); `end` deletes A, deletes the
//! session the pointer names, and deletes the pointer. Whichever runs
//! second sees what the first did: if `end` runs first, `cycle` finds A
//! gone; if `cycle` runs first, `end` finds N through the pointer. A chain of
//! moves (A to N to M) keeps the pointer on the latest id.
//! (These two scripts build the pointer's and the target's key names
//! inside the script, which a standalone server allows.)
//!
//! # `cycle_id` and logout on Redis Cluster
//!
//! On Cluster the old id, the new id and the pointer live in different
//! slots (usually on different nodes), and no script can touch two of them.
//! Each step below is atomic on its own key:
//!
//! `cycle(A -> N)`:
//! 1. **take**: one script on A checks the session, reads all of it and
//!    deletes it. From this moment A is dead: a request on it loads nothing,
//!    and a change set for it is dropped.
//! 2. **put**: the change set is applied in the app, and the session is
//!    created under N with insert-if-absent (on a collision, which does not
//!    happen with UUID v4 ids, it is put back under A and the layer retries).
//! 3. **point**: one script on the pointer sets it to N, *unless* it holds
//!    the mark `ended`; then the store deletes N and reports
//!    [`CycleOutcome::Gone`] (no cookie is sent for N).
//!
//! `end(A, P)`:
//! 1. `DEL A`. If A existed, the session was still under the id this
//!    request loaded, and no move has taken it (a move deletes A in its
//!    step 1 first): the session is ended. A pointer naming A (left by an
//!    earlier move into A) is deleted too, so nothing is left behind. (If
//!    that earlier move's step 3 lands only after this `end`, its pointer
//!    names a dead id and stays until its TTL: garbage, bounded in time.)
//! 2. Otherwise, one command (`SET pointer ended PX <ttl> GET`) marks the
//!    pointer ended and reads the id it held; that id's session is deleted.
//!
//! Why every interleaving of `end(A, P)` with a `cycle(A -> N)` (C) ends the
//! session, where L's `DEL A` found nothing (otherwise step 1 settles it):
//!
//! - C's step 1 ran before L's `DEL A` (that is why A was gone), and:
//!   - C's step 3 ran before L's mark: the pointer held N; L deletes N
//!     (created in C's step 2, before step 3).
//!   - C's step 3 runs after L's mark: it sees `ended`, deletes N, and C
//!     reports `Gone`, so N is never handed out.
//! - A later move of N (to M, by a request that knew N) is the same case one
//!   step further: its step 1 on N fails if L deleted N, and its step 3
//!   sees the mark otherwise; if it completed before L's mark, the pointer
//!   held M and L deletes M.
//! - C failing between its steps (a `503`) never hands out N; the session
//!   is then lost (the user signs in again), never duplicated. A full Redis
//!   (`OOM`) does not get that far: step 1 makes a write Redis refuses under
//!   `OOM` before it deletes anything, so the move fails with the session
//!   intact under A. What remains is a connection lost or a command timed
//!   out between the steps.
//!
//! The `ended` mark lives only a few seconds: 3 × (the
//! [command timeout](RedisStore::with_command_timeout) + the
//! [acknowledgement timeout](RedisStore::with_replica_ack), if any) + 2 s,
//! 8 s by default. That is enough because C reports `Moved` only if its
//! three steps answered within 3 × (command timeout + acknowledgement
//! timeout) of sending step 1: step 3 then ran before the mark (set after
//! C's step 1) expired; the 2 s cover the app's and Redis's clocks running
//! at slightly different rates. A slower cycle deletes N and fails with a
//! `503` instead.
//!
//! # Links and the registry
//!
//! [`SessionStore::list`], [`end_linked`](crate::SessionStore::end_linked)
//! and [`end_public`](crate::SessionStore::end_public) find sessions by the
//! index keys and move pointers above. Every linked session has a pointer
//! naming its current id, and an entry in the index of each of its links.
//!
//! **Order of the steps.** The session and its index keys and pointer
//! usually live in different slots (on Cluster, on different nodes), so a
//! write that links is two steps, in this order, on standalone servers
//! too (one code path; each step is atomic on its own keys):
//!
//! 1. **index step** (one batch): for each link, one script adds (or
//!    refreshes) the session's entry with the current time as its score
//!    and makes the index key live at least until the session's horizon
//!    (twice as far ahead as its expiry); one script points the pointer at
//!    the session's id (unless it is marked ended by a logout, or names
//!    another id: a move took the session, and the write is
//!    [gone](crate::store::SaveOutcome::Gone)) and makes it live as long.
//! 2. **session step**: the write's own script (create, save, cycle)
//!    applies the items, links, lifetime settings, expiry and horizon in
//!    one go. It refuses to run (a `503`, nothing written) when Redis's
//!    clock says more than 2 × (the command timeout + the acknowledgement
//!    timeout) passed since step 1 began: a session step cannot land after
//!    its entry could be pruned.
//!
//! A save does not know the session's public id or links beforehand: its
//! script answers "index first" (writing nothing) when the change set adds
//! a link, or when the new expiry would pass the horizon of a linked
//! session; the store runs step 1 and the script again. So a failure
//! between the steps leaves an index entry (and a pointer) for a session
//! that is not linked so: a *stale* entry, never listed, pruned later. A
//! linked session is never missing from the index, and its index keys and
//! pointer never expire before it (a refresh past its horizon indexes
//! first).
//!
//! Unlinking, and a save or cycle that deletes the session, go the other
//! way: the session step first, then the entries are removed (best effort;
//! an entry written within the pruning grace, below, is left for pruning,
//! since a concurrent write may have linked the session again). Ending
//! removes the session first and its entries after.
//!
//! **Pruning.** `list` and `end_linked` read the index, the pointers and
//! the sessions (three batches); an entry whose session is not found, has
//! expired, or is no longer linked so is stale. It is removed (one script
//! on the index, after one batch re-reading those pointers) only if its
//! pointer did not change meanwhile (a `cycle` on a standalone server
//! moves the pointer in the script that moves the session), no Cluster
//! `cycle` is carrying it (the `taken` note below), and its score is older
//! than the grace (the session step's window + 2 s for clocks): no write
//! that indexed it can still land. A Cluster `cycle` also indexes every
//! link of the session again between taking it and creating it under its
//! new id (before its create's deadline starts). Index keys also expire:
//! each lives until the latest horizon of its sessions.
//!
//! A logout (`destroy`, [`SessionStore::end`](crate::SessionStore::end))
//! does not touch the index: its entries are stale from then on, and go
//! with the next `list` or `end_linked` of that link (after the grace) or
//! with the index key's TTL, whichever comes first.
//!
//! **Ending.** `end_public` and `end_linked` end a session wherever a
//! concurrent `cycle` moved it, and a racing `cycle` cannot undo it:
//!
//! - Standalone: one script per session reads the pointer, deletes it and
//!   the session it names, atomically with respect to `cycle` (which moves
//!   session and pointer in one script).
//! - Cluster: the [`end` protocol](#cycle_id-and-logout-on-redis-cluster)
//!   without its first step: `SET pointer ended PX … GET` marks the
//!   pointer (a move still in flight then deletes its new session and
//!   reports `Gone`) and reads the id it held; a script deletes the session
//!   there. A move that had already taken a linked session from that id
//!   left a note (`{prefix}taken:{<id>}`, living as long as the `ended`
//!   mark) so the session still counts as ended.
//!
//! `end_linked` ends every session its survey finds linked, and those not
//! found where their pointer names (possibly between two ids on Cluster),
//! sparing what [`Keep`](crate::store::Keep) says; every session whose link
//! was stored before it began is in the index by then. A session linked
//! while it runs survives if its index step comes after the index was read.
//!
//! What is atomic: each script (the session step; each index key's
//! update; each pointer's update; each end on a standalone server). What
//! is not: the index step with the session step, and the batches of the
//! registry with one another; the order above is what makes every
//! interleaving safe.
//!
//! # Requirements
//!
//! Redis 7.0 or later (`PEXPIRETIME`; also `SET … PXAT`, `SET … GET`).
//! On an older server every load fails with an error that names the
//! requirement (a `500`): the store does not guess the expiry from a
//! relative `PTTL` and the app's clock. On a standalone server
//! the `cycle` and `end` scripts build the move pointer's key name inside
//! the script (the public id is read from the hash), which a standalone
//! server allows but a proxy that shards keys behind one endpoint (e.g.
//! twemproxy, Envoy's Redis proxy) does not: use
//! [`connect_cluster`](RedisStore::connect_cluster) for sharded
//! deployments.
//!
//! # Memory and eviction
//!
//! A session of two small items (`user_id` and a 32-character token)
//! takes about 272 bytes of Redis 7.0 memory: Redis's per-key structures
//! (the key, an object header, two dictionary entries, table slots) and a
//! listpack-encoded hash of 112 bytes. The README's capacity section has
//! the figures, sessions per GiB, and the Redis CPU per read and write
//! (`examples/redis_capacity.rs` measures them).
//!
//! Redis holds the live sessions, one move pointer per session that was
//! moved or linked (it expires when the session would have at the move, or
//! at a linked session's horizon, and a logout deletes it), one index key
//! per link value in use (it expires at its sessions' latest horizon; its
//! stale entries are pruned by `list` and `end_linked`), and, for a few
//! seconds, an `ended` mark per logout of a moved session and a `taken`
//! note per `cycle` of a linked session on Cluster. So memory stays bounded by the live sessions plus the
//! requests in flight; a plain sign-in, `cycle_id`, sign-out loop leaves no
//! key behind.
//!
//! An **evicted session is a silent logout**. Use
//! `maxmemory-policy noeviction`: a full Redis then answers `OOM`, and
//! the store reports [`StoreErrorKind::Full`](crate::StoreErrorKind::Full)
//! (`503` for new sessions and writes; reads still work). Every session key
//! has a TTL, so `volatile-*` policies evict sessions as readily as
//! `allkeys-*` ones. [`connect`](RedisStore::connect) and
//! [`connect_cluster`](RedisStore::connect_cluster) read the policy
//! ([`RedisStore::eviction_policy`]) and log a warning naming the fix when
//! it can evict; a server that refuses `CONFIG` is fine (policy unknown).
//!
//! # Replication
//!
//! By default Redis replicates asynchronously: a write the store reports as
//! done (the response is `200`) can be lost if the primary dies before its
//! replica received it and the replica is promoted. With
//! [`RedisStore::with_replica_ack`] every session write (create, save,
//! cycle, end, touch) is followed by `WAIT <replicas> <timeout>` on the
//! same connection, in the same pipeline, so on the node that owns the key:
//! a `200` then means the write reached that many replicas; fewer
//! acknowledgements in time is an
//! [`Unavailable`](crate::StoreErrorKind::Unavailable) error (`503`), and
//! the write may still have been applied (and may still replicate).
//!
//! # Redis Sentinel
//!
//! [`RedisStore::connect_sentinel`] asks the sentinels for the primary of a
//! master name, checks that it says `ROLE master`, and sends every command
//! there. A connection error, `READONLY`, `MASTERDOWN` or a command timeout
//! makes it ask the sentinels again, in a background task (one at a time),
//! while requests fail fast with `503`; the first request after the new
//! primary is verified succeeds, and the scripts are loaded there first.
//! [`with_replica_ack`](RedisStore::with_replica_ack) works as on a
//! standalone server: after a failover, acknowledged writes need the
//! promoted primary to have a replica again. Details, and why this is not
//! redis-rs's `sentinel` feature, on [`RedisStore::connect_sentinel`].
//!
//! # Failures
//!
//! Every command is bounded by a timeout ([`DEFAULT_COMMAND_TIMEOUT`],
//! [`RedisStore::with_command_timeout`]), so a Redis that hangs cannot hang
//! requests. A refused, dropped or timed-out connection, a cluster that is
//! down or being reconfigured (`CLUSTERDOWN`, `TRYAGAIN`, a failover), a
//! server still loading its data (`LOADING`), cut off from its primary
//! (`MASTERDOWN`), or running a script too long (`BUSY`) are
//! [`StoreErrorKind::Unavailable`] (the layer answers `503`, never an empty
//! session); `OOM` is [`StoreErrorKind::Full`] (`503`); other Redis errors
//! are [`StoreErrorKind::Other`] (`500`).
//!
//! The standalone connection is a `redis::aio::ConnectionManager`: one
//! multiplexed connection that reconnects by itself. [`RedisStore::connect`]
//! tunes its reconnection so that, while Redis is down, requests fail fast
//! (in about half a second when the server refuses connections) instead of
//! waiting out a long backoff, and the first request after Redis is back
//! succeeds, without an app restart.
//! The Cluster connection (`redis::cluster_async::ClusterConnection`)
//! refreshes its view of the cluster and reconnects to nodes by itself; when
//! a primary dies, requests on its slots get `503` until its replica is
//! promoted, then succeed again.
//!
//! A timed-out write may still be applied by Redis later (the command was
//! sent). Every write is a change set or an expiry moved forward, so applying
//! it late does no harm beyond what it says.
//!
//! Corrupted data (a key of another type under a session's name, a hash
//! without readable metadata, an item that is not UTF-8) is treated as
//! absent: the key is deleted, a `tracing` warning is logged, and the
//! request starts with a fresh session.
//!
//! # Clocks
//!
//! Expiry times are computed by the app (milliseconds since the Unix epoch)
//! and compared by the app and by the scripts with the app's clock; only the
//! key's TTL (`PEXPIREAT`) is enforced by Redis's clock. Keep the clocks of
//! the app servers and of Redis in sync (NTP): a skew of a few seconds only
//! shifts when Redis reclaims the memory of an expired session.
//!
//! # Client
//!
//! Built on [redis-rs](https://docs.rs/redis) (`redis` 1.x): apps that
//! already talk to Redis can hand their connection to
//! [`RedisStore::from_connection_manager`] or
//! [`RedisStore::from_cluster_connection`].
//!
//! [`SaveOutcome::Gone`]: crate::store::SaveOutcome::Gone
//! [`CycleOutcome::Gone`]: crate::store::CycleOutcome::Gone
//! [`SessionStore::end`]: crate::SessionStore::end
//! [`StoreErrorKind::Unavailable`]: crate::StoreErrorKind::Unavailable
//! [`StoreErrorKind::Other`]: crate::StoreErrorKind::Other
//! [`StoreErrorKind::Full`]: crate::StoreErrorKind::Full
//! [`PublicId`]: crate::PublicId
//! [`SessionStore::list`]: crate::SessionStore::list

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod cluster;
mod conn;
mod hash;
mod links;
mod ops;
mod scripts;
mod sentinel;
#[cfg(feature = "redis-tls")]
mod tls;

use conn::{Ack, Conn};
use ops::{int, warn_corrupted};
pub use sentinel::SentinelOptions;
#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use tls::RedisTls;

/// The default bound on every Redis command: 2 seconds.
///
/// A command that gets no answer in time fails with
/// [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable), and
/// the layer answers `503`.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::redis::DEFAULT_COMMAND_TIMEOUT;
///
/// assert_eq!(DEFAULT_COMMAND_TIMEOUT.as_secs(), 2);
/// ```
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The default key prefix: `session:`. A session's key is
/// `session:{<id>}`.
///
/// # Example
///
/// ```
/// use tower_session_storage::store::redis::DEFAULT_KEY_PREFIX;
///
/// assert_eq!(DEFAULT_KEY_PREFIX, "session:");
/// ```
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// Sessions in Redis or Redis Cluster: one hash per session, change sets
/// applied by server-side scripts, expiry carried by the key's TTL.
///
/// Several app instances using the same Redis (and the same
/// [key prefix](Self::with_key_prefix)) share their sessions: a cookie made
/// by one works on every other. The semantics are those of the
/// [`MemoryStore`](crate::MemoryStore), so switching stores changes one
/// line. The [module docs](self) describe the data model, the scripts, the
/// failure behaviour, and what is atomic on Redis Cluster.
///
/// A cheap `Clone`: clones share the connection.
///
/// # Example
///
/// ```no_run
/// use tower_session_storage::{RedisStore, SessionLayer};
///
/// # async fn run() -> Result<(), tower_session_storage::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = SessionLayer::new(store);
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    timeout: Duration,
    ack: Option<Ack>,
    eviction_policy: Option<Arc<str>>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.conn {
            Conn::Standalone(_) => "standalone",
            Conn::Cluster(_) => "cluster",
            Conn::Sentinel(_) => "sentinel",
        };
        f.debug_struct("RedisStore")
            .field("mode", &mode)
            .field("key_prefix", &&*self.prefix)
            .field("command_timeout", &self.timeout)
            .field("replica_ack", &self.ack)
            .field("eviction_policy", &self.eviction_policy)
            .finish()
    }
}

impl RedisStore {
    /// The prefix of every session key: a session's key is
    /// `{prefix}{<id>}`, its move pointer's `{prefix}moved:{<public id>}`,
    /// the index of a link `{prefix}link:<name>:{<value>}`.
    /// Apps that share sessions must use the same prefix; apps that must
    /// not, different ones. The default is [`DEFAULT_KEY_PREFIX`]
    /// (`session:`).
    ///
    /// # Panics
    ///
    /// When the prefix contains `{` or `}`: Redis Cluster would hash the
    /// prefix's braces instead of the session id's, putting every session in
    /// one slot.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_key_prefix("myapp:session:");
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            !prefix.contains(['{', '}']),
            "RedisStore::with_key_prefix: the prefix {prefix:?} contains a brace; \
             Redis Cluster would hash it instead of the session id. Use a prefix without '{{' and '}}'"
        );
        self.prefix = Arc::from(prefix);
        self
    }

    /// The longest any Redis command may take before the operation fails
    /// with [`StoreErrorKind::Unavailable`](crate::StoreErrorKind::Unavailable)
    /// (the layer answers `503`). A `cycle` on Redis Cluster sends three
    /// commands, each bounded by it. The default is
    /// [`DEFAULT_COMMAND_TIMEOUT`] (2 seconds).
    ///
    /// # Panics
    ///
    /// When `timeout` is zero: every command would fail.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_command_timeout(Duration::from_millis(500));
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "RedisStore::with_command_timeout: the timeout must be longer than zero"
        );
        self.timeout = timeout;
        self
    }

    /// Waits for `replicas` replicas to acknowledge every session write
    /// (create, save, cycle, end, touch), for at most `timeout` each:
    /// `WAIT replicas timeout` right after the write, on the same
    /// connection (on Redis Cluster, the node that owns the session's key).
    ///
    /// What each setting guarantees:
    ///
    /// - **Default (no ack)**: Redis replicates asynchronously. A write
    ///   answered `200` can be lost if its primary dies before the replica
    ///   got it and the replica is promoted (a sign-in undone, a logout
    ///   undone).
    /// - **With ack**: a `200` means the write reached at least `replicas`
    ///   replicas, so it survives the failover of its primary (to one of
    ///   them). Fewer acknowledgements within `timeout` is an
    ///   [`Unavailable`](crate::StoreErrorKind::Unavailable) error (`503`),
    ///   but the write was applied on the primary and may still replicate:
    ///   a `503` does not mean "nothing happened". Each write then takes
    ///   up to `timeout` longer, on top of the command timeout.
    ///
    /// `WAIT` is not a consensus protocol: a write acknowledged by a replica
    /// that is not the one promoted can still be lost. Ask for as many
    /// replicas as the primary has to rule that out.
    ///
    /// The default is no acknowledgement.
    ///
    /// # Panics
    ///
    /// When `replicas` or `timeout` is zero (`WAIT` with a zero timeout
    /// waits for ever).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_replica_ack(1, Duration::from_millis(200));
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_replica_ack(mut self, replicas: usize, timeout: Duration) -> Self {
        assert!(
            replicas > 0 && timeout.as_millis() > 0,
            "RedisStore::with_replica_ack: ask for at least one replica and a timeout of at \
             least 1 ms (WAIT with a zero timeout waits for ever)"
        );
        self.ack = Some(Ack { replicas, timeout });
        self
    }

    /// The server's `maxmemory-policy` as read by
    /// [`connect`](Self::connect) or [`connect_cluster`](Self::connect_cluster)
    /// (from one node), or `None` when it was not read (the server refused
    /// `CONFIG`, or the store was made from an existing connection).
    ///
    /// Sessions need `noeviction`: see the
    /// [module docs](self#memory-and-eviction).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use tower_session_storage::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_storage::StoreError> {
    /// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
    /// if store.eviction_policy() != Some("noeviction") {
    ///     eprintln!("Redis may evict sessions: set maxmemory-policy noeviction");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn eviction_policy(&self) -> Option<&str> {
        self.eviction_policy.as_deref()
    }
}
