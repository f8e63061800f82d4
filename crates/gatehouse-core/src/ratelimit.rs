//! Failed-login rate limiting, per source and per account. A source (an IPv4 address, or an
//! IPv6 /64: one customer's prefix) that fails `source.max_failures` times within its
//! window is refused for its lockout, whatever credentials it then presents. An account
//! that fails `account.max_failures` times within its window, from any mix of sources, has
//! its *guessable* logins (password, TOTP) refused for its lockout: a distributed guesser
//! gets no more tries than a single one, while the owner's public key still works (so a
//! stranger cannot lock an operator out of key logins by guessing at their password).
//!
//! A success clears only the failures of the account that succeeded (at that source and in
//! the account's own count): an attacker who holds one valid account cannot reset its
//! source's count of guesses against other accounts by logging in between them. Active
//! lockouts are never lifted by a success (a locked-out source never gets to try).
//!
//! `now` is an input, so the rules are tested exactly without sleeping.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    pub max_failures: u32,
    pub window: Duration,
    pub lockout: Duration,
    /// Keys (sources or accounts) tracked at most; stale ones are forgotten first.
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

/// Both limits of the login gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    pub source: LimiterConfig,
    pub account: LimiterConfig,
}

impl LoginLimits {
    /// Per account: 20 failures within 10 minutes lock the account's password and TOTP
    /// logins for 15 minutes. Looser than the per-source limit (an operator mistyping from
    /// several machines must not be locked out) but it caps a botnet at ~2 guesses a minute
    /// per account instead of 10 per address per minute.
    pub const DEFAULT_ACCOUNT: LimiterConfig = LimiterConfig {
        max_failures: 20,
        window: Duration::from_secs(600),
        lockout: Duration::from_secs(900),
        max_sources: 100_000,
    };
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            source: LimiterConfig::default(),
            account: LoginLimits::DEFAULT_ACCOUNT,
        }
    }
}

/// What a failed-login limit counts as one source: an IPv4 address, or the /64 prefix of an
/// IPv6 address (a single host usually holds a whole /64, so counting addresses would give
/// it 2^64 fresh budgets). IPv4-mapped IPv6 addresses count as their IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceBucket {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl SourceBucket {
    pub fn of(ip: IpAddr) -> SourceBucket {
        match ip {
            IpAddr::V4(v4) => SourceBucket::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceBucket::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    SourceBucket::V6Prefix([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl std::fmt::Display for SourceBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceBucket::V4(o) => write!(f, "{}", std::net::Ipv4Addr::from(*o)),
            SourceBucket::V6Prefix(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Times of recent failures, each with the tag of the account it was against (0: none).
    failures: Vec<(Instant, u64)>,
    locked_until: Option<Instant>,
}

/// Failure bookkeeping for one kind of key (sources or accounts).
#[derive(Debug)]
pub struct FailedLoginLimiter<K> {
    config: LimiterConfig,
    entries: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> FailedLoginLimiter<K> {
    pub fn new(config: LimiterConfig) -> Self {
        FailedLoginLimiter {
            config,
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` when `key` is locked out at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|s| s.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Counts a failure (tagged with the account it was against, 0 for none); returns `true`
    /// when this failure locked `key` out.
    pub fn record_failure(&mut self, key: &K, tag: u64, now: Instant) -> bool {
        if self.entries.len() >= self.config.max_sources && !self.entries.contains_key(key) {
            self.forget_stale(now);
        }
        let window = self.config.window;
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            failures: Vec::new(),
            locked_until: None,
        });
        entry
            .failures
            .retain(|(t, _)| now.saturating_duration_since(*t) < window);
        entry.failures.push((now, tag));
        if entry.failures.len() as u32 >= self.config.max_failures {
            entry.failures.clear();
            entry.locked_until = Some(now + self.config.lockout);
            return true;
        }
        false
    }

    /// Forgets `key`'s failures tagged `tag` (all of them for `None`), never its lockout.
    pub fn clear(&mut self, key: &K, tag: Option<u64>) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match tag {
            Some(tag) => entry.failures.retain(|(_, t)| *t != tag),
            None => entry.failures.clear(),
        }
        if entry.failures.is_empty() && entry.locked_until.is_none() {
            self.entries.remove(key);
        }
    }

    /// Failures of `key` still inside the window at `now`.
    pub fn failures(&self, key: &K, now: Instant) -> usize {
        self.entries.get(key).map_or(0, |e| {
            e.failures
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) < self.config.window)
                .count()
        })
    }

    fn forget_stale(&mut self, now: Instant) {
        let window = self.config.window;
        self.entries.retain(|_, s| {
            s.locked_until.is_some_and(|u| u > now)
                || s.failures
                    .last()
                    .is_some_and(|(t, _)| now.saturating_duration_since(*t) < window)
        });
        // Still full of live entries: drop an arbitrary one rather than grow without bound.
        if self.entries.len() >= self.config.max_sources
            && let Some(k) = self.entries.keys().next().cloned()
        {
            self.entries.remove(&k);
        }
    }

    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

/// Which limit refused a login, and for how long still.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    Source { retry_after: Duration },
    Account { retry_after: Duration },
}

impl LoginRefusal {
    pub fn retry_after(self) -> Duration {
        match self {
            LoginRefusal::Source { retry_after } | LoginRefusal::Account { retry_after } => {
                retry_after
            }
        }
    }
}

/// What one failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureOutcome {
    pub source_locked_out: bool,
    pub account_locked_out: bool,
}

/// Both limits together. Accounts are keyed by a keyed hash of their name, so a flood of
/// long made-up user names costs 8 bytes each, not their length.
#[derive(Debug)]
pub struct LoginLimiter {
    sources: FailedLoginLimiter<SourceBucket>,
    accounts: FailedLoginLimiter<u64>,
    hasher: RandomState,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        LoginLimiter {
            sources: FailedLoginLimiter::new(limits.source),
            accounts: FailedLoginLimiter::new(limits.account),
            hasher: RandomState::new(),
        }
    }

    fn tag(&self, account: &str) -> u64 {
        // 0 means "no account"; a real name hashing to 0 just shares that tag
        self.hasher.hash_one(account)
    }

    /// May `source` try to log in at `now`? With `account` (a guessable secret is about to
    /// be checked: password, TOTP) the account's limit applies as well.
    pub fn check(
        &self,
        source: SourceBucket,
        account: Option<&str>,
        now: Instant,
    ) -> Result<(), LoginRefusal> {
        self.sources
            .check(&source, now)
            .map_err(|retry_after| LoginRefusal::Source { retry_after })?;
        if let Some(a) = account {
            self.accounts
                .check(&self.tag(a), now)
                .map_err(|retry_after| LoginRefusal::Account { retry_after })?;
        }
        Ok(())
    }

    /// Counts a failure against `source` and, with `account` (a wrong guessable secret),
    /// against the account too. A key nobody authorized is not a guess at a secret: it
    /// counts against the source only.
    pub fn record_failure(
        &mut self,
        source: SourceBucket,
        account: Option<&str>,
        now: Instant,
    ) -> FailureOutcome {
        let tag = account.map_or(0, |a| self.tag(a));
        FailureOutcome {
            source_locked_out: self.sources.record_failure(&source, tag, now),
            account_locked_out: account.is_some() && self.accounts.record_failure(&tag, 0, now),
        }
    }

    /// `account` logged in from `source`: forgets that account's failures (its own count,
    /// and those it left at this source); other accounts' failures at the source stay.
    pub fn record_success(&mut self, source: SourceBucket, account: &str) {
        let tag = self.tag(account);
        self.sources.clear(&source, Some(tag));
        self.accounts.clear(&tag, None);
    }

    /// Failures still counted against `source` at `now`.
    pub fn source_failures(&self, source: SourceBucket, now: Instant) -> usize {
        self.sources.failures(&source, now)
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
