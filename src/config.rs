//! [`Config`]: what the builders on [`SessionLayer`](crate::SessionLayer)
//! set, checked and rendered once when the layer is applied, and the expiry
//! policy ([`Expiry`]) that turns it into times.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::cookie::CookieConfig;
use crate::store::Timestamp;

/// The default idle timeout: 24 hours.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The default cap on the items of one session.
pub const DEFAULT_MAX_ITEMS: usize = 256;
/// The default cap on the size of one session (keys plus values): 64 KiB.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 64 * 1024;

/// What every request of one [`SessionService`](crate::SessionService)
/// shares: the store and the checked config, built once in
/// [`Layer::layer`](tower_layer::Layer::layer).
pub(crate) struct Shared<Store> {
    pub(crate) store: Arc<Store>,
    pub(crate) config: Config,
    /// The same store and config, for handlers (in the request's extensions).
    pub(crate) registry: crate::registry::SessionRegistry,
}

/// The layer's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) cookie: CookieConfig,
    /// `Some`: the id travels in this header instead of the cookie.
    pub(crate) header: Option<HeaderName>,
    pub(crate) expiry: Expiry,
    /// Whether the cookie carries `Max-Age` (kept across browser restarts).
    pub(crate) persistent: bool,
    pub(crate) max_items: usize,
    pub(crate) max_bytes: usize,
    /// `with_max_sessions_per_link`: at most this many sessions per value of
    /// a link name.
    pub(crate) link_caps: Vec<(Box<str>, usize)>,
}

impl Config {
    pub(crate) fn new(idle_timeout: Duration, max_items: usize, max_bytes: usize) -> Self {
        Self {
            cookie: CookieConfig::default(),
            header: None,
            expiry: Expiry {
                idle: idle_timeout,
                absolute: None,
            },
            persistent: false,
            max_items,
            max_bytes,
            link_caps: Vec::new(),
        }
    }

    /// Checks the settings and renders what every response reuses; the
    /// error names the fix.
    pub(crate) fn build(mut self) -> Result<Self, String> {
        if let Some(p) = self.problem() {
            return Err(p);
        }
        self.cookie.render();
        Ok(self)
    }

    /// The cap on sessions per value of the link `name`, if one was set.
    pub(crate) fn link_cap(&self, name: &str) -> Option<usize> {
        self.link_caps
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|&(_, cap)| cap)
    }

    fn problem(&self) -> Option<String> {
        if let Some(p) = self.cookie.problem() {
            return Some(p);
        }
        if self.expiry.idle.is_zero() {
            return Some("the idle timeout must be longer than zero (with_idle_timeout)".into());
        }
        if self.expiry.absolute.is_some_and(|a| a.is_zero()) {
            return Some(
                "the absolute timeout must be longer than zero (with_absolute_timeout)".into(),
            );
        }
        if let Some((name, _)) = self.link_caps.iter().find(|(_, cap)| *cap == 0) {
            return Some(format!(
                "with_max_sessions_per_link({name:?}, 0) would end every session that links \
                 {name:?}; the cap must be at least 1"
            ));
        }
        if let Some((name, _)) = self
            .link_caps
            .iter()
            .find(|(n, _)| crate::store::link_problem(n, None).is_some())
        {
            return Some(format!(
                "with_max_sessions_per_link: {name:?} is not a link name (1 to 32 ASCII \
                 letters, digits, '_', '-', '.')"
            ));
        }
        if self.max_items == 0 || self.max_bytes == 0 {
            return Some(
                "session caps must be at least 1 (with_max_items, with_max_session_bytes)".into(),
            );
        }
        None
    }
}

/// A stored session's two times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
}

/// A session's own lifetime settings, where it has any (`None`: the
/// layer's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Lifetime {
    pub(crate) idle: Option<Duration>,
    pub(crate) persistent: Option<bool>,
}

impl Lifetime {
    pub(crate) fn of(meta: &crate::store::Meta) -> Self {
        Self {
            idle: meta.idle_timeout(),
            persistent: meta.persistent_cookie(),
        }
    }

    /// These settings with the changes `changes` makes to them.
    pub(crate) fn changed_by(self, changes: &crate::store::ChangeSet) -> Self {
        Self {
            idle: changes.idle_timeout().or(self.idle),
            persistent: changes.persistent_cookie().or(self.persistent),
        }
    }

    /// Whether the session's cookie is persistent (carries `Max-Age`).
    pub(crate) fn persistent(self, config: &Config) -> bool {
        self.persistent.unwrap_or(config.persistent)
    }

    /// The expiry policy for this session: the layer's, with the session's
    /// own idle timeout if it has one (the absolute timeout still bounds it).
    pub(crate) fn expiry(self, config: &Config) -> Expiry {
        Expiry {
            idle: self.idle.unwrap_or(config.expiry.idle),
            absolute: config.expiry.absolute,
        }
    }
}

/// The idle and absolute timeouts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    pub(crate) idle: Duration,
    pub(crate) absolute: Option<Duration>,
}

impl Expiry {
    /// When a session created at `now` expires.
    pub(crate) fn first(&self, now: Timestamp) -> Timestamp {
        self.renewed(now, now)
    }

    /// When the session `times` describes expires if it is used at `now`.
    pub(crate) fn next(&self, times: Times, now: Timestamp) -> Timestamp {
        self.renewed(times.created_at, now)
    }

    fn renewed(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let idle = now.saturating_add(self.idle);
        match self.absolute {
            Some(a) => idle.min(created_at.saturating_add(a)),
            None => idle,
        }
    }

    /// Whether a stored session is no longer valid at `now`.
    ///
    /// A record whose expiry precedes its creation cannot come from a
    /// correct store (expiry only moves forward from creation): it is treated
    /// as expired too.
    pub(crate) fn is_expired(&self, times: Times, now: Timestamp) -> bool {
        times.expires_at <= now
            || times.created_at > times.expires_at
            || self
                .absolute
                .is_some_and(|a| times.created_at.saturating_add(a) <= now)
    }

    /// Whether moving the session's expiry from where `times` has it to
    /// `next` is worth a write.
    ///
    /// Activity is recorded with a resolution of a sixteenth of the idle
    /// timeout, at most a minute: a session is touched at most once per that
    /// span, and expires between the idle timeout minus that span and the
    /// idle timeout after its last use.
    pub(crate) fn refresh_due(&self, times: Times, next: Timestamp) -> bool {
        let step = (self.idle / 16).min(Duration::from_secs(60));
        next > times.expires_at.saturating_add(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    const EXPIRY: Expiry = Expiry {
        idle: Duration::from_secs(60),
        absolute: Some(Duration::from_secs(100)),
    };

    #[test]
    fn the_idle_timeout_slides_and_the_absolute_timeout_caps_it() {
        assert_eq!(EXPIRY.first(at(10)), at(70));
        let times = Times {
            created_at: at(10),
            expires_at: at(70),
        };
        assert_eq!(EXPIRY.next(times, at(30)), at(90));
        assert_eq!(
            EXPIRY.next(times, at(80)),
            at(110),
            "capped at creation + 100 s"
        );
        assert!(!EXPIRY.is_expired(times, at(69)));
        assert!(EXPIRY.is_expired(times, at(70)));
        let busy = Times {
            created_at: at(10),
            expires_at: at(200),
        };
        assert!(EXPIRY.is_expired(busy, at(110)), "absolute timeout");
        let impossible = Times {
            created_at: at(50),
            expires_at: at(40),
        };
        assert!(EXPIRY.is_expired(impossible, at(0)));
    }

    #[test]
    fn a_refresh_is_due_once_per_sixteenth_of_the_idle_timeout() {
        let times = Times {
            created_at: at(0),
            expires_at: at(60),
        };
        // 60 s / 16 = 3.75 s.
        assert!(!EXPIRY.refresh_due(times, at(63)));
        assert!(EXPIRY.refresh_due(times, at(64)));
    }
}
