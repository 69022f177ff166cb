//! [`Timestamp`]: the one type for every time a store keeps, and the clock.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment: milliseconds since the Unix epoch (UTC).
///
/// Every time the layer and its stores keep (when a session was created,
/// when it expires) is a `Timestamp`, so a time cannot be passed where a
/// duration or a count is expected, and arithmetic saturates instead of
/// overflowing.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_session_storage::store::Timestamp;
///
/// let created = Timestamp::from_millis(1_000);
/// let expires = created.saturating_add(Duration::from_secs(60));
/// assert_eq!(expires.as_millis(), 61_000);
/// assert_eq!(expires.saturating_duration_since(created), Duration::from_secs(60));
/// assert_eq!(created.saturating_duration_since(expires), Duration::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// The latest representable moment (never reached in practice).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The moment `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The layer's clock: the wall clock, read afresh on every call.
    ///
    /// A clock corrected after start-up (an NTP step at boot, an operator
    /// fixing the time) is followed at once: sessions are never created
    /// already expired, and never kept past their time, because of a
    /// correction the process missed. Under tokio's paused test clock
    /// (`#[tokio::test(start_paused = true)]`) it stands still except for
    /// `tokio::time::advance`, so expiry can be tested without sleeping.
    pub fn now() -> Self {
        Self(now_millis())
    }

    /// `self` plus `d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis(d)))
    }

    /// `self` minus `d`, saturating at [`Timestamp::UNIX_EPOCH`].
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(millis(d)))
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The same moment as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl From<SystemTime> for Timestamp {
    /// Whole milliseconds since the Unix epoch; a time before it is the epoch.
    fn from(t: SystemTime) -> Self {
        Self(t.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The clock behind [`Timestamp::now`]: `SystemTime::now()`, shifted by how
/// far tokio's clock is from the real monotonic clock. With tokio's clock
/// running normally the two agree (the shift is zero); paused, the reading
/// stands still except for `tokio::time::advance`.
fn now_millis() -> u64 {
    use std::time::Instant;
    let wall = wall_clock()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let real = Instant::now();
    let tokio = tokio::time::Instant::now().into_std();
    // Sub-millisecond differences are the two clocks being read a few
    // nanoseconds apart: ignore them.
    match tokio.checked_duration_since(real) {
        Some(ahead) => wall.saturating_add(ahead.as_millis() as u64),
        None => wall.saturating_sub(real.duration_since(tokio).as_millis() as u64),
    }
}

#[cfg(not(test))]
fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// In unit tests, the system clock can be stepped (as NTP or an operator
/// would) with [`step_wall_clock`].
#[cfg(test)]
fn wall_clock() -> std::time::SystemTime {
    let step = WALL_STEP.with(std::cell::Cell::get);
    let now = std::time::SystemTime::now();
    if step >= 0 {
        now + std::time::Duration::from_millis(step as u64)
    } else {
        now - std::time::Duration::from_millis(step.unsigned_abs())
    }
}

#[cfg(test)]
thread_local! {
    static WALL_STEP: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Steps this thread's system clock by `ms` (negative: back), as an NTP
/// correction would. Unit tests only.
#[cfg(test)]
pub(crate) fn step_wall_clock(ms: i64) {
    WALL_STEP.with(|s| s.set(s.get() + ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_millis() -> u64 {
        Timestamp::now().as_millis()
    }

    #[test]
    fn the_wall_clock_is_followed_when_it_is_stepped_after_start_up() {
        let before = now_millis();
        // The clock was two hours behind at start-up; NTP fixes it.
        step_wall_clock(2 * 3600 * 1000);
        let after = now_millis();
        step_wall_clock(-2 * 3600 * 1000);
        assert!(
            after >= before + 2 * 3600 * 1000,
            "a wall clock stepped forward by 2 h must be seen: {before} -> {after}"
        );
        let back = now_millis();
        assert!(back < after, "a step back is followed too");
    }

    #[tokio::test(start_paused = true)]
    async fn paused_time_stands_still_and_advances_exactly() {
        let a = now_millis();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = now_millis();
        assert!(
            a.abs_diff(b) <= 2,
            "paused: real time does not move it ({a} -> {b})"
        );
        tokio::time::advance(std::time::Duration::from_secs(90)).await;
        let c = now_millis();
        assert!(c.abs_diff(b + 90_000) <= 2, "{b} -> {c}");
    }
}
