//! The session enforcer: a pure state machine that turns a policy, operator activity and
//! the passage of time into directives — warn, lock, unlock, end.
//!
//! Time is a `Duration` since the session opened (the caller's monotonic clock); nothing
//! here reads a clock. The caller sleeps until [`Enforcer::next_wakeup`], then calls
//! [`Enforcer::poll`] with the current offset and carries out what it returns. One timer
//! per session, no scan over sessions.

use std::time::Duration;

use crate::policy::{EnvPolicy, IdleAction, format_countdown, format_duration};
use crate::session::EndReason;

/// When a changed policy puts a limit in the past, the session gets this long, with a
/// warning, instead of ending without notice; short, so that a shortened policy takes
/// effect within 2 seconds of the change.
pub const FINAL_NOTICE: Duration = Duration::from_secs(1);
/// Wrong answers allowed at an in-band reauthentication before the session ends.
pub const MAX_UNLOCK_ATTEMPTS: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarnKind {
    Idle,
    MaxSession,
    Reauth,
}

impl WarnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WarnKind::Idle => "idle",
            WarnKind::MaxSession => "max_session",
            WarnKind::Reauth => "reauth",
        }
    }

    /// The kind named by [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<WarnKind> {
        [WarnKind::Idle, WarnKind::MaxSession, WarnKind::Reauth]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockReason {
    Idle,
    Reauth,
}

impl LockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LockReason::Idle => "idle",
            LockReason::Reauth => "reauth",
        }
    }
}

/// What the session's front must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// Show the operator a warning line.
    Warn {
        kind: WarnKind,
        remaining: Duration,
        message: String,
    },
    /// Stop relaying both ways and ask for the password in-band.
    Lock { reason: LockReason, message: String },
    /// The operator proved identity again: resume relaying.
    Unlocked,
    /// A wrong answer at the lock prompt; `attempts_left` more are allowed.
    UnlockFailed { attempts_left: u8 },
    /// End the session, showing `message`.
    End { reason: EndReason, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lock {
    reason: LockReason,
    since: Duration,
    failures: u8,
}

/// Enforcement state of one session.
#[derive(Debug, Clone)]
pub struct Enforcer {
    policy: EnvPolicy,
    last_activity: Duration,
    authenticated_at: Duration,
    lock: Option<Lock>,
    lock_capable: bool,
    /// Deadlines moved to `now + FINAL_NOTICE` by a policy change that put them in the past.
    idle_override: Option<Duration>,
    max_override: Option<Duration>,
    reauth_override: Option<Duration>,
    /// Warning leads already given for each kind's current deadline.
    warned_idle: Vec<Duration>,
    warned_max: Vec<Duration>,
    warned_reauth: Vec<Duration>,
    /// Warnings to hand out at the next poll (final notices after a policy change), and
    /// when they became due.
    pending: Vec<Directive>,
    pending_at: Duration,
    ended: bool,
}

impl Enforcer {
    /// A session that opened (and authenticated) at offset zero.
    pub fn new(policy: EnvPolicy) -> Enforcer {
        Enforcer {
            policy,
            last_activity: Duration::ZERO,
            authenticated_at: Duration::ZERO,
            lock: None,
            lock_capable: false,
            idle_override: None,
            max_override: None,
            reauth_override: None,
            warned_idle: Vec::new(),
            warned_max: Vec::new(),
            warned_reauth: Vec::new(),
            pending: Vec::new(),
            pending_at: Duration::ZERO,
            ended: false,
        }
    }

    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Since when the session is locked at the prompt, if it is.
    pub fn locked_since(&self) -> Option<Duration> {
        self.lock.map(|l| l.since)
    }

    /// The last activity the enforcer counted (the open, or the last unlock, at least).
    pub fn last_activity(&self) -> Duration {
        self.last_activity
    }

    /// The nearest limit and when it falls: idle, maximum length or reauthentication (while
    /// locked, the end of the lock grace counts as the reauthentication deadline). Warnings
    /// are not limits. `None` when no limit applies or the session ended.
    pub fn next_limit(&self) -> Option<(WarnKind, Duration)> {
        if self.ended {
            return None;
        }
        let grace = self
            .lock
            .map(|l| (WarnKind::Reauth, l.since + self.policy.lock_grace));
        [WarnKind::MaxSession, WarnKind::Idle, WarnKind::Reauth]
            .into_iter()
            .filter_map(|k| self.deadline(k).map(|d| (k, d)))
            .chain(grace)
            .min_by_key(|(_, d)| *d)
    }

    /// Whether the session can be locked and unlocked in-band (a terminal, and a password
    /// to ask for). Without it, a lock becomes an end.
    pub fn set_lock_capable(&mut self, capable: bool) {
        self.lock_capable = capable;
    }

    /// The operator did something. Ignored while locked (keystrokes then answer the
    /// prompt) and after the end. Returns whether it counted.
    pub fn activity(&mut self, now: Duration) -> bool {
        if self.lock.is_some() || self.ended {
            return false;
        }
        self.last_activity = now;
        self.idle_override = None;
        self.warned_idle.clear();
        true
    }

    /// A new policy for the live session. Limits already past get [`FINAL_NOTICE`] and a
    /// warning, handed out by the next [`poll`](Self::poll).
    pub fn set_policy(&mut self, policy: EnvPolicy, now: Duration) {
        self.policy = policy;
        self.idle_override = None;
        self.max_override = None;
        self.reauth_override = None;
        self.warned_idle.clear();
        self.warned_max.clear();
        self.warned_reauth.clear();
        if self.ended {
            return;
        }
        let final_at = now + FINAL_NOTICE;
        if let Some(d) = self.natural_idle_deadline()
            && d <= final_at
        {
            self.idle_override = Some(final_at.max(d));
        }
        if let Some(d) = self.natural_max_deadline()
            && d <= final_at
        {
            self.max_override = Some(final_at.max(d));
        }
        if let Some(d) = self.natural_reauth_deadline()
            && d <= final_at
        {
            self.reauth_override = Some(final_at.max(d));
        }
        for kind in [WarnKind::Idle, WarnKind::MaxSession, WarnKind::Reauth] {
            if let Some(deadline) = self.deadline(kind)
                && Some(deadline) == self.override_of(kind)
            {
                let warning = self.warning(kind, deadline - now, now);
                self.pending.push(warning);
                self.pending_at = now;
                // the leads are spent: the final notice replaces them
                let leads = self.policy.warn_before.clone();
                self.warned_mut(kind).extend(leads);
            }
        }
    }

    /// An admin ended the session (or locked the operator's account), or its recording
    /// failed.
    pub fn kill(&mut self, reason: EndReason) -> Directive {
        self.ended = true;
        let message = match &reason {
            EndReason::AdminKill(why) if !why.is_empty() => format!("terminated by admin: {why}"),
            EndReason::OperatorLocked => "account locked by admin".into(),
            EndReason::RecordingFailed => {
                "recording failed; the session cannot continue unrecorded".into()
            }
            EndReason::Shutdown => "gatehouse is shutting down".into(),
            EndReason::Interrupted => {
                "this broker node was declared lost and its sessions were closed".into()
            }
            _ => "terminated by admin".into(),
        };
        Directive::End { reason, message }
    }

    /// The answer typed at the lock prompt was checked: `ok` or not.
    pub fn unlock_attempt(&mut self, ok: bool, now: Duration) -> Option<Directive> {
        let lock = self.lock.as_mut()?;
        if self.ended {
            return None;
        }
        if ok {
            self.lock = None;
            self.last_activity = now;
            self.authenticated_at = now;
            self.idle_override = None;
            self.reauth_override = None;
            self.warned_idle.clear();
            self.warned_reauth.clear();
            return Some(Directive::Unlocked);
        }
        lock.failures += 1;
        if lock.failures >= MAX_UNLOCK_ATTEMPTS {
            self.ended = true;
            return Some(Directive::End {
                reason: EndReason::ReauthFailed,
                message: "reauthentication failed".into(),
            });
        }
        Some(Directive::UnlockFailed {
            attempts_left: MAX_UNLOCK_ATTEMPTS - lock.failures,
        })
    }

    /// When [`poll`](Self::poll) next has something to do; `None` when nothing ever will.
    pub fn next_wakeup(&self) -> Option<Duration> {
        if self.ended {
            return None;
        }
        if !self.pending.is_empty() {
            return Some(self.pending_at);
        }
        let mut next: Option<Duration> = None;
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(lock) = &self.lock {
            consider(lock.since + self.policy.lock_grace);
        }
        for kind in [WarnKind::Idle, WarnKind::MaxSession, WarnKind::Reauth] {
            if let Some(deadline) = self.deadline(kind) {
                consider(deadline);
                if let Some(t) = self.next_warning_time(kind, deadline) {
                    consider(t);
                }
            }
        }
        next
    }

    /// Everything due at `now`, in order.
    pub fn poll(&mut self, now: Duration) -> Vec<Directive> {
        if self.ended {
            return Vec::new();
        }
        let mut out = std::mem::take(&mut self.pending);
        // The earliest limit reached decides; at a tie the absolute limit wins.
        let mut reached: Option<(Duration, u8, WarnKind)> = None;
        for (rank, kind) in [WarnKind::MaxSession, WarnKind::Idle, WarnKind::Reauth]
            .into_iter()
            .enumerate()
        {
            if let Some(d) = self.deadline(kind)
                && d <= now
                && reached.is_none_or(|(best, r, _)| (d, rank as u8) < (best, r))
            {
                reached = Some((d, rank as u8, kind));
            }
        }
        if let Some((_, _, kind)) = reached {
            out.push(self.limit_reached(kind, now));
            return out;
        }
        if let Some(lock) = &self.lock
            && lock.since + self.policy.lock_grace <= now
        {
            self.ended = true;
            out.push(Directive::End {
                reason: EndReason::ReauthTimeout,
                message: format!(
                    "reauthentication not completed within {}",
                    format_duration(self.policy.lock_grace)
                ),
            });
            return out;
        }
        for kind in [WarnKind::MaxSession, WarnKind::Idle, WarnKind::Reauth] {
            let Some(deadline) = self.deadline(kind) else {
                continue;
            };
            let due: Vec<Duration> = self
                .policy
                .warn_before
                .iter()
                .copied()
                .filter(|lead| deadline.saturating_sub(*lead) <= now)
                .filter(|lead| !self.warned(kind).contains(lead))
                .collect();
            if due.is_empty() {
                continue;
            }
            self.warned_mut(kind).extend(due);
            out.push(self.warning(kind, deadline - now, now));
        }
        out
    }

    fn limit_reached(&mut self, kind: WarnKind, now: Duration) -> Directive {
        let lockable = self.lock_capable;
        match kind {
            WarnKind::MaxSession => self.end(
                EndReason::MaxSession,
                format!(
                    "maximum session length {} reached",
                    format_duration(self.policy.max_session.unwrap_or_default())
                ),
            ),
            WarnKind::Idle if self.policy.idle_action == IdleAction::Lock && lockable => {
                self.lock = Some(Lock {
                    reason: LockReason::Idle,
                    since: now,
                    failures: 0,
                });
                Directive::Lock {
                    reason: LockReason::Idle,
                    message: format!(
                        "session locked after {} idle",
                        format_duration(self.policy.idle_timeout.unwrap_or_default())
                    ),
                }
            }
            WarnKind::Idle => self.end(
                EndReason::IdleTimeout,
                format!(
                    "idle timeout {} reached",
                    format_duration(self.policy.idle_timeout.unwrap_or_default())
                ),
            ),
            WarnKind::Reauth if lockable => {
                self.lock = Some(Lock {
                    reason: LockReason::Reauth,
                    since: now,
                    failures: 0,
                });
                Directive::Lock {
                    reason: LockReason::Reauth,
                    message: format!(
                        "reauthentication required ({} since login)",
                        format_duration(self.policy.reauth_after.unwrap_or_default())
                    ),
                }
            }
            WarnKind::Reauth => self.end(
                EndReason::ReauthRequired,
                format!(
                    "reauthentication required ({} since login); log in again",
                    format_duration(self.policy.reauth_after.unwrap_or_default())
                ),
            ),
        }
    }

    fn end(&mut self, reason: EndReason, message: String) -> Directive {
        self.ended = true;
        Directive::End { reason, message }
    }

    fn warning(&self, kind: WarnKind, remaining: Duration, now: Duration) -> Directive {
        let left = format_countdown(remaining);
        let locks = self.lock_capable;
        let message = match kind {
            WarnKind::Idle => {
                let idle_for = format_countdown(now.saturating_sub(self.last_activity));
                let verb = if self.policy.idle_action == IdleAction::Lock && locks {
                    "locks"
                } else {
                    "closes"
                };
                format!(
                    "idle for {idle_for} — this session {verb} in {left}; press any key to stay"
                )
            }
            WarnKind::MaxSession => format!(
                "this session reaches its maximum length of {} in {left}",
                format_duration(self.policy.max_session.unwrap_or_default())
            ),
            WarnKind::Reauth if locks => {
                format!("reauthentication required in {left}: you will be asked for your password")
            }
            WarnKind::Reauth => format!("this session ends in {left}: reauthentication is due"),
        };
        Directive::Warn {
            kind,
            remaining,
            message,
        }
    }

    fn natural_idle_deadline(&self) -> Option<Duration> {
        if self.lock.is_some() {
            return None;
        }
        self.policy.idle_timeout.map(|t| self.last_activity + t)
    }

    fn natural_max_deadline(&self) -> Option<Duration> {
        self.policy.max_session
    }

    fn natural_reauth_deadline(&self) -> Option<Duration> {
        if self.lock.is_some() {
            return None;
        }
        self.policy.reauth_after.map(|t| self.authenticated_at + t)
    }

    fn override_of(&self, kind: WarnKind) -> Option<Duration> {
        match kind {
            WarnKind::Idle => self.idle_override,
            WarnKind::MaxSession => self.max_override,
            WarnKind::Reauth => self.reauth_override,
        }
    }

    fn deadline(&self, kind: WarnKind) -> Option<Duration> {
        let natural = match kind {
            WarnKind::Idle => self.natural_idle_deadline(),
            WarnKind::MaxSession => self.natural_max_deadline(),
            WarnKind::Reauth => self.natural_reauth_deadline(),
        }?;
        Some(self.override_of(kind).unwrap_or(natural))
    }

    fn warned(&self, kind: WarnKind) -> &Vec<Duration> {
        match kind {
            WarnKind::Idle => &self.warned_idle,
            WarnKind::MaxSession => &self.warned_max,
            WarnKind::Reauth => &self.warned_reauth,
        }
    }

    fn warned_mut(&mut self, kind: WarnKind) -> &mut Vec<Duration> {
        match kind {
            WarnKind::Idle => &mut self.warned_idle,
            WarnKind::MaxSession => &mut self.warned_max,
            WarnKind::Reauth => &mut self.warned_reauth,
        }
    }

    fn next_warning_time(&self, kind: WarnKind, deadline: Duration) -> Option<Duration> {
        self.policy
            .warn_before
            .iter()
            .filter(|lead| !self.warned(kind).contains(lead))
            .map(|lead| deadline.saturating_sub(*lead))
            .min()
    }
}

#[cfg(test)]
#[path = "enforcement_tests.rs"]
mod tests;
