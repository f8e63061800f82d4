//! Failed-login rate limiting per source address. A source that fails `max_failures` times
//! within `window` is refused for `lockout`, whatever credentials it then presents.
//! `now` is an input, so the rule is tested exactly without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Sources tracked at most; the oldest are forgotten first when it is exceeded.
    pub max_sources: usize,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_sources: 100_000,
        }
    }
}

#[derive(Debug, Clone)]
struct SourceState {
    failures: Vec<Instant>,
    locked_until: Option<Instant>,
}

/// Per-source failure bookkeeping. Keyed by whatever identifies a source (an IP address).
#[derive(Debug)]
pub struct FailedLoginLimiter<K> {
    config: LimiterConfig,
    sources: HashMap<K, SourceState>,
}

impl<K: Hash + Eq + Clone> FailedLoginLimiter<K> {
    pub fn new(config: LimiterConfig) -> Self {
        FailedLoginLimiter {
            config,
            sources: HashMap::new(),
        }
    }

    /// `Err(retry_after)` when the source is locked out at `now`.
    pub fn check(&self, source: &K, now: Instant) -> Result<(), Duration> {
        match self.sources.get(source).and_then(|s| s.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure; returns `true` when this failure locked the source out.
    pub fn record_failure(&mut self, source: &K, now: Instant) -> bool {
        if self.sources.len() >= self.config.max_sources && !self.sources.contains_key(source) {
            self.forget_stale(now);
        }
        let window = self.config.window;
        let state = self
            .sources
            .entry(source.clone())
            .or_insert_with(|| SourceState {
                failures: Vec::new(),
                locked_until: None,
            });
        state
            .failures
            .retain(|t| now.saturating_duration_since(*t) < window);
        state.failures.push(now);
        if state.failures.len() as u32 >= self.config.max_failures {
            state.failures.clear();
            state.locked_until = Some(now + self.config.lockout);
            return true;
        }
        false
    }

    /// A successful login clears the source's failures (not an active lockout: a locked-out
    /// source never gets to try).
    pub fn record_success(&mut self, source: &K) {
        if let Some(s) = self.sources.get_mut(source)
            && s.locked_until.is_none()
        {
            self.sources.remove(source);
        }
    }

    fn forget_stale(&mut self, now: Instant) {
        let window = self.config.window;
        self.sources.retain(|_, s| {
            s.locked_until.is_some_and(|u| u > now)
                || s.failures
                    .last()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        // Still full of live entries: drop an arbitrary one rather than grow without bound.
        if self.sources.len() >= self.config.max_sources
            && let Some(k) = self.sources.keys().next().cloned()
        {
            self.sources.remove(&k);
        }
    }

    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LimiterConfig {
        LimiterConfig {
            max_failures: 3,
            window: Duration::from_secs(10),
            lockout: Duration::from_secs(60),
            max_sources: 4,
        }
    }

    #[test]
    fn locks_out_after_max_failures_within_window() {
        let t0 = Instant::now();
        let mut l = FailedLoginLimiter::new(cfg());
        assert!(!l.record_failure(&"a", t0));
        assert!(!l.record_failure(&"a", t0 + Duration::from_secs(1)));
        assert_eq!(l.check(&"a", t0 + Duration::from_secs(2)), Ok(()));
        assert!(l.record_failure(&"a", t0 + Duration::from_secs(2)));
        assert_eq!(
            l.check(&"a", t0 + Duration::from_secs(2)),
            Err(Duration::from_secs(60))
        );
        // another source is unaffected
        assert_eq!(l.check(&"b", t0 + Duration::from_secs(2)), Ok(()));
        // exactly at the end of the lockout it is lifted
        assert_eq!(l.check(&"a", t0 + Duration::from_secs(62)), Ok(()));
        assert_eq!(
            l.check(&"a", t0 + Duration::from_secs(61)),
            Err(Duration::from_secs(1))
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut l = FailedLoginLimiter::new(cfg());
        l.record_failure(&"a", t0);
        l.record_failure(&"a", t0 + Duration::from_secs(5));
        assert!(!l.record_failure(&"a", t0 + Duration::from_secs(10)));
        assert_eq!(l.check(&"a", t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn success_clears_failures_but_not_lockout() {
        let t0 = Instant::now();
        let mut l = FailedLoginLimiter::new(cfg());
        l.record_failure(&"a", t0);
        l.record_failure(&"a", t0);
        l.record_success(&"a");
        assert!(!l.record_failure(&"a", t0));
        assert!(!l.record_failure(&"a", t0));
        assert!(l.record_failure(&"a", t0));
        l.record_success(&"a");
        assert!(l.check(&"a", t0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = FailedLoginLimiter::new(cfg());
        for i in 0..100 {
            l.record_failure(&i, t0 + Duration::from_millis(i));
        }
        assert!(l.tracked_sources() <= 4);
    }
}
