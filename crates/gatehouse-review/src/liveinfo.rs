//! What the list shows about a live session beyond its registry row: how long its operator
//! has been idle, the nearest limit that will end (or lock) it, and whether it is locked.
//!
//! From the store first ([`from_guard`]): what the session's guard knows, written by its
//! node's heartbeat every 2 s (and at once on lock and unlock), reauthentication deadline
//! included. A row without it (its node predates those columns, or has not beaten yet)
//! falls back to an estimate from the recording ([`live_info`]): activity is what the
//! enforcement counts and the recording keeps — operator input (`i` events) for terminal
//! sessions, statements for SQL sessions —, the lock state the last `locked:`/`unlocked:`
//! marker; the reauthentication deadline is not known there. The operator's account lock
//! comes from the store either way. Pure: the catalog hands everything in.

use std::time::Duration;

use gatehouse_core::WarnKind;
use gatehouse_recorder::sql_log::LineMark;
use gatehouse_recorder::{Code, EventLine};
use gatehouse_store::GuardState;

/// How much of a live recording's end is read for its activity.
pub const TAIL_BYTES: u64 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Idle,
    Max,
    Reauth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Open,
    /// At the in-band lock prompt (idle limit with `idle_action = lock`).
    Session,
    /// The operator's account is locked (the session ends within 2 s).
    Account,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveInfo {
    pub idle_for: Duration,
    /// The nearest limit and the time left until it.
    pub next_limit: Option<(Limit, Duration)>,
    pub lock: Lock,
}

/// What the end of a recording says, times since the session opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TailActivity {
    pub last_activity: Option<Duration>,
    /// The first event read (when the tail starts mid-file, activity was at least that
    /// long ago if none was found).
    pub first_event: Option<Duration>,
    pub locked: Option<bool>,
}

/// Scans complete lines of a terminal recording or a statement log (with the recorder's
/// line types, as the writer wrote them).
pub fn scan_tail(bytes: &[u8]) -> TailActivity {
    let mut a = TailActivity::default();
    let seconds = |t: f64| Duration::from_secs_f64(t.min(1e12));
    for line in bytes.split(|b| *b == b'\n') {
        let (at, activity, marker) = if let Some(e) = EventLine::parse(line) {
            let code = e.code();
            let marker = (code == Some(Code::Marker)).then(|| e.data().to_owned());
            (e.at(), code == Some(Code::Input), marker)
        } else {
            match LineMark::parse(line) {
                Some(LineMark::Statement { t }) => (seconds(t), true, None),
                Some(LineMark::Marker(m)) => (seconds(m.t), false, Some(m.label)),
                Some(LineMark::Other { t } | LineMark::Target { t }) => (seconds(t), false, None),
                None => continue,
            }
        };
        a.first_event.get_or_insert(at);
        if activity {
            a.last_activity = Some(at);
        }
        match marker.as_deref() {
            Some(label) if label.starts_with("locked:") => a.locked = Some(true),
            Some(label) if label.starts_with("unlocked:") => a.locked = Some(false),
            _ => {}
        }
    }
    a
}

/// A live session's state at `now` (Unix ms) from what its guard reported.
pub fn from_guard(now: i64, guard: &GuardState, account_locked: bool) -> LiveInfo {
    let until = |at: i64| Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
    let lock = if account_locked {
        Lock::Account
    } else if guard.locked_since.is_some() {
        Lock::Session
    } else {
        Lock::Open
    };
    let next_limit = guard.next_limit.map(|(kind, at)| {
        let limit = match kind {
            WarnKind::Idle => Limit::Idle,
            WarnKind::MaxSession => Limit::Max,
            WarnKind::Reauth => Limit::Reauth,
        };
        (limit, until(at))
    });
    LiveInfo {
        idle_for: Duration::from_millis(u64::try_from(now - guard.last_activity_at).unwrap_or(0)),
        next_limit: next_limit.filter(|_| lock != Lock::Account),
        lock,
    }
}

/// A live session's state `elapsed` after it started, estimated from its recording's tail.
pub fn live_info(
    elapsed: Duration,
    tail: &TailActivity,
    idle_timeout: Option<Duration>,
    max_session: Option<Duration>,
    account_locked: bool,
) -> LiveInfo {
    let last = tail.last_activity.or(tail.first_event).unwrap_or_default();
    let idle_for = elapsed.saturating_sub(last);
    let lock = if account_locked {
        Lock::Account
    } else if tail.locked == Some(true) {
        Lock::Session
    } else {
        Lock::Open
    };
    let idle = idle_timeout
        .filter(|_| lock == Lock::Open)
        .map(|t| (Limit::Idle, t.saturating_sub(idle_for)));
    let max = max_session.map(|m| (Limit::Max, m.saturating_sub(elapsed)));
    let next_limit = [idle, max].into_iter().flatten().min_by_key(|(_, d)| *d);
    LiveInfo {
        idle_for,
        next_limit,
        lock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn activity_and_lock_state_from_either_kind_of_recording() {
        let cast = b"[1.0, \"o\", \"$ \"]\n[2.5, \"i\", \"ls\\r\"]\n[3.0, \"o\", \"x\"]\n[9.0, \"m\", \"locked: idle for 5m\"]\n";
        let a = scan_tail(cast);
        assert_eq!(a.last_activity, Some(Duration::from_millis(2500)));
        assert_eq!(a.first_event, Some(S));
        assert_eq!(a.locked, Some(true));
        let a = scan_tail(b"[9.5, \"m\", \"unlocked: reauthenticated\"]\ncut [1,");
        assert_eq!(a.locked, Some(false));
        let sql = b"{\"t\":4.0,\"type\":\"statement\",\"text\":\"select 1\"}\n{\"t\":5.0,\"type\":\"marker\",\"label\":\"warning\"}\n";
        assert_eq!(scan_tail(sql).last_activity, Some(4 * S));
    }

    #[test]
    fn the_nearest_limit_and_the_lock_win() {
        let tail = TailActivity {
            last_activity: Some(10 * S),
            first_event: Some(S),
            locked: None,
        };
        let i = live_info(70 * S, &tail, Some(300 * S), Some(3600 * S), false);
        assert_eq!(i.idle_for, 60 * S);
        assert_eq!(i.next_limit, Some((Limit::Idle, 240 * S)));
        assert_eq!(i.lock, Lock::Open);
        let i = live_info(3500 * S, &tail, Some(4000 * S), Some(3600 * S), false);
        assert_eq!(i.next_limit, Some((Limit::Max, 100 * S)));
        // locked at the prompt: the idle limit no longer runs
        let locked = TailActivity {
            locked: Some(true),
            ..tail
        };
        let i = live_info(70 * S, &locked, Some(300 * S), None, false);
        assert_eq!((i.lock, i.next_limit), (Lock::Session, None));
        let i = live_info(70 * S, &tail, None, None, true);
        assert_eq!((i.lock, i.next_limit), (Lock::Account, None));
        // no input seen: idle since the first event read
        let i = live_info(5 * S, &TailActivity::default(), None, None, false);
        assert_eq!(i.idle_for, 5 * S);
    }

    #[test]
    fn the_guards_report_names_the_reauth_deadline_and_the_lock() {
        let g = GuardState {
            last_activity_at: 10_000,
            locked_since: None,
            next_limit: Some((WarnKind::Reauth, 130_000)),
        };
        let i = from_guard(70_000, &g, false);
        assert_eq!(i.idle_for, 60 * S);
        assert_eq!(i.next_limit, Some((Limit::Reauth, 60 * S)));
        assert_eq!(i.lock, Lock::Open);
        let locked = GuardState {
            locked_since: Some(65_000),
            next_limit: Some((WarnKind::MaxSession, 60_000)),
            ..g
        };
        let i = from_guard(70_000, &locked, false);
        // a deadline just passed shows as zero, not as a negative time
        assert_eq!(
            (i.lock, i.next_limit),
            (Lock::Session, Some((Limit::Max, Duration::ZERO)))
        );
        let i = from_guard(70_000, &g, true);
        assert_eq!((i.lock, i.next_limit), (Lock::Account, None));
    }
}
