//! The detective control's rules: given what the records say happened (the session
//! registry, the audit log, the recordings, the policy history, node heartbeats) and `now`,
//! which sessions and logins broke policy.
//!
//! Independent of enforcement on purpose: nothing here asks the [`crate::Enforcer`] or a
//! guard what it decided. Each rule re-derives a deadline from the policy version in force
//! (see [`PolicyHistory`]) and compares it with recorded times, so a guard that failed to
//! act, a session whose guard never ran and a recording that disagrees with the registry all
//! show. Times are Unix milliseconds (records are wall-clock); recording offsets are
//! milliseconds since the session started. Every threshold carries a tolerance so that a
//! broker doing its job is never reported.

use std::collections::HashMap;
use std::time::Duration;

use crate::EnvPolicy;

#[path = "detective_facts.rs"]
mod facts;
#[path = "detective_recording.rs"]
mod recording;
pub use facts::{
    Facts, KillFact, LockChange, NodeFact, PolicyHistory, PolicyVersion, SessionFacts,
};
pub use recording::{Gap, LateActivity, LiveState, Mark, Recorded, RecordingFact, Timeline};

/// Slack granted on top of every limit before it counts as broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tolerances {
    /// Added to idle, maximum-length and lock-grace limits (timers, flush intervals,
    /// clock skew between the registry and the recording).
    pub limit: Duration,
    /// How long a live session may outlast a kill request or a user lock.
    pub kill: Duration,
    /// How long after a policy change a live session may still run under the old one (the
    /// watcher's poll plus the final warning of a shortened limit).
    pub policy_change: Duration,
    /// A node whose last heartbeat is older than this is gone (and its sessions are the
    /// other nodes' to take over).
    pub node_timeout: Duration,
    /// How long after a node is gone its live sessions may wait for another node's
    /// takeover (a pass every 2 s) before they are a finding.
    pub takeover: Duration,
    /// How long a new live session may go unclaimed by any running guard.
    pub owner_grace: Duration,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            limit: Duration::from_secs(2),
            kill: Duration::from_secs(2),
            policy_change: Duration::from_secs(2),
            node_timeout: Duration::from_secs(15),
            takeover: Duration::from_secs(3),
            owner_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A live session older than its environment's maximum session length.
    MaxSession,
    /// A live, unlocked session without recorded operator activity for longer than the
    /// idle timeout.
    IdleTimeout,
    /// A live session locked for longer than the lock grace.
    LockGrace,
    /// A live session that outlived an admin's kill request.
    KillIgnored,
    /// A live session that outlived its operator's lock.
    UserLockIgnored,
    /// An ended session whose recording shows operator activity after the end.
    ActivityAfterEnd,
    /// An ended session that lasted (registry or recording) longer than its maximum.
    RecordedMaxSession,
    /// An ended session whose recording shows an idle gap longer than the idle timeout.
    RecordedIdleGap,
    /// A locked period in the recording longer than the lock grace.
    RecordedLockGrace,
    /// A session that relayed bytes to a target without a recording.
    NoRecording,
    /// A recording that does not verify.
    RecordingUnverified,
    /// A live session on a node that stopped heartbeating.
    NodeGone,
    /// A live session that no running guard claims.
    NoGuard,
    /// A login by an operator who was locked at the time.
    LockedOperatorLogin,
    /// A login by an operator who does not exist.
    DeletedOperatorLogin,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::MaxSession => "max_session",
            Rule::IdleTimeout => "idle_timeout",
            Rule::LockGrace => "lock_grace",
            Rule::KillIgnored => "kill_ignored",
            Rule::UserLockIgnored => "user_lock_ignored",
            Rule::ActivityAfterEnd => "activity_after_end",
            Rule::RecordedMaxSession => "recorded_max_session",
            Rule::RecordedIdleGap => "recorded_idle_gap",
            Rule::RecordedLockGrace => "recorded_lock_grace",
            Rule::NoRecording => "no_recording",
            Rule::RecordingUnverified => "recording_unverified",
            Rule::NodeGone => "node_gone",
            Rule::NoGuard => "no_guard",
            Rule::LockedOperatorLogin => "locked_operator_login",
            Rule::DeletedOperatorLogin => "deleted_operator_login",
        }
    }
}

/// A value in a finding's evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    Int(i64),
    Text(String),
}

impl From<i64> for Evidence {
    fn from(v: i64) -> Self {
        Evidence::Int(v)
    }
}

impl From<&str> for Evidence {
    fn from(v: &str) -> Self {
        Evidence::Text(v.to_owned())
    }
}

impl From<String> for Evidence {
    fn from(v: String) -> Self {
        Evidence::Text(v)
    }
}

/// One broken rule, with what proves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    pub session_id: String,
    pub operator: String,
    pub node: String,
    /// The session is still live (so it can be ended).
    pub live: bool,
    /// One line for people.
    pub message: String,
    /// Named facts for machines (times in Unix ms, spans in ms).
    pub evidence: Vec<(&'static str, Evidence)>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

struct Ctx<'a> {
    facts: &'a Facts,
    tol: &'a Tolerances,
    now: i64,
}

/// Runs every rule over `facts` at `now` (Unix ms). Findings come sorted by session, then
/// rule.
pub fn evaluate(facts: &Facts, tol: &Tolerances, now: i64) -> Vec<Finding> {
    let cx = Ctx { facts, tol, now };
    let nodes: HashMap<&str, &NodeFact> = facts.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut out = Vec::new();
    for s in &facts.sessions {
        let mut add = |rule: Rule, message: String, evidence: Vec<(&'static str, Evidence)>| {
            out.push(Finding {
                rule,
                session_id: s.id.clone(),
                operator: s.operator.clone(),
                node: s.node.clone(),
                live: s.ended_at.is_none(),
                message,
                evidence,
            });
        };
        login_rules(&cx, s, &mut add);
        recording_rules(s, &mut add);
        match s.ended_at {
            None => {
                live_rules(&cx, s, &mut add);
                owner_rules(&cx, s, nodes.get(s.node_id.as_str()).copied(), &mut add);
            }
            Some(end) => ended_rules(&cx, s, end, &mut add),
        }
    }
    out.sort_by(|a, b| (&a.session_id, a.rule).cmp(&(&b.session_id, b.rule)));
    out
}

type Add<'a> = dyn FnMut(Rule, String, Vec<(&'static str, Evidence)>) + 'a;

fn login_rules(cx: &Ctx<'_>, s: &SessionFacts, add: &mut Add<'_>) {
    // a denied login (no environment) reached nothing: that is the lock working
    if s.environment.is_none() {
        return;
    }
    if !cx.facts.operators.contains_key(&s.operator) {
        add(
            Rule::DeletedOperatorLogin,
            format!("operator '{}' does not exist but logged in", s.operator),
            vec![("started_at", s.started_at.into())],
        );
        return;
    }
    let last_change = cx
        .facts
        .lock_changes
        .iter()
        .filter(|c| c.operator == s.operator && c.at <= s.started_at)
        .max_by_key(|c| c.at);
    if let Some(c) = last_change
        && c.locked
    {
        add(
            Rule::LockedOperatorLogin,
            format!("operator '{}' logged in while locked", s.operator),
            vec![
                ("locked_at", c.at.into()),
                ("started_at", s.started_at.into()),
            ],
        );
    }
}

fn recording_rules(s: &SessionFacts, add: &mut Add<'_>) {
    match &s.recording {
        RecordingFact::Tampered { why, .. } => add(
            Rule::RecordingUnverified,
            format!("recording does not verify: {why}"),
            vec![("verdict", why.clone().into())],
        ),
        RecordingFact::Unreadable(why) => add(
            Rule::RecordingUnverified,
            format!("recording cannot be read: {why}"),
            vec![("error", why.clone().into())],
        ),
        RecordingFact::None if s.ended_at.is_some() && s.environment.is_some() && s.bytes > 0 => {
            add(
                Rule::NoRecording,
                format!("{} bytes relayed without a recording", s.bytes),
                vec![("bytes", s.bytes.into())],
            )
        }
        _ => {}
    }
}

/// The latest moment the guard may let a session run under `v`, for a limit counted from
/// `since`: the limit itself, or (a version that came in later) its arrival plus the time
/// a policy change takes to act.
fn deadline(cx: &Ctx<'_>, since: i64, limit: Duration, v: &PolicyVersion) -> i64 {
    (since.saturating_add(ms(limit))).max(v.valid_from.saturating_add(ms(cx.tol.policy_change)))
        + ms(cx.tol.limit)
}

/// The first version in force during `[since, until)` under which the span broke `limit`:
/// its deadline passed while it was still in force and before `until`. Returns the limit and
/// the deadline.
fn broken(
    cx: &Ctx<'_>,
    env: &str,
    since: i64,
    until: i64,
    limit: impl Fn(&EnvPolicy) -> Option<Duration>,
) -> Option<(Duration, i64, i64)> {
    cx.facts
        .policies
        .during(env, since, Some(until.min(cx.now)))
        .into_iter()
        .find_map(|f| {
            let l = limit(&f.version.policy)?;
            let d = deadline(cx, since, l, f.version);
            let in_force = f.until.is_none_or(|u| d < u);
            (in_force && d < until).then_some((l, d, f.version.version))
        })
}

fn live_rules(cx: &Ctx<'_>, s: &SessionFacts, add: &mut Add<'_>) {
    if let Some(k) = &s.kill
        && cx.now - k.at > ms(cx.tol.kill)
    {
        let (rule, what) = if k.user_lock {
            (Rule::UserLockIgnored, "its operator was locked")
        } else {
            (Rule::KillIgnored, "an admin asked to end it")
        };
        add(
            rule,
            format!("still live {} ms after {what}", cx.now - k.at),
            vec![("requested_at", k.at.into())],
        );
    }
    let Some(env) = s.environment.as_deref() else {
        return;
    };
    if let Some((l, d, v)) = broken(cx, env, s.started_at, cx.now, |p| p.max_session) {
        add(
            Rule::MaxSession,
            format!(
                "live for {} ms, past its maximum of {} ms",
                cx.now - s.started_at,
                ms(l)
            ),
            vec![
                ("started_at", s.started_at.into()),
                ("max_session_ms", ms(l).into()),
                ("deadline", d.into()),
                ("policy_version", v.into()),
            ],
        );
    }
    let timeline = s.recording.timeline();
    let state = timeline.map(Timeline::state).unwrap_or_default();
    let since = s.started_at + state.last_activity;
    match state.locked_at {
        None => {
            if let Some((l, d, v)) = broken(cx, env, since, cx.now, |p| p.idle_timeout) {
                add(
                    Rule::IdleTimeout,
                    format!(
                        "no recorded operator activity for {} ms, past its idle timeout of {} ms",
                        cx.now - since,
                        ms(l)
                    ),
                    vec![
                        ("last_activity", since.into()),
                        ("idle_timeout_ms", ms(l).into()),
                        ("deadline", d.into()),
                        ("policy_version", v.into()),
                    ],
                );
            }
        }
        Some(at) => {
            let locked = s.started_at + at;
            if let Some((l, d, v)) = broken(cx, env, locked, cx.now, |p| Some(p.lock_grace)) {
                add(
                    Rule::LockGrace,
                    format!(
                        "locked for {} ms, past its lock grace of {} ms",
                        cx.now - locked,
                        ms(l)
                    ),
                    vec![
                        ("locked_at", locked.into()),
                        ("lock_grace_ms", ms(l).into()),
                        ("deadline", d.into()),
                        ("policy_version", v.into()),
                    ],
                );
            }
        }
    }
}

fn owner_rules(cx: &Ctx<'_>, s: &SessionFacts, node: Option<&NodeFact>, add: &mut Add<'_>) {
    let silent = node.map(|n| cx.now - n.heartbeat_at);
    let gone_since = silent.map(|s| s - ms(cx.tol.node_timeout));
    if let (Some(n), Some(g)) = (node, gone_since)
        && !n.stopped
        && g > 0
        && g <= ms(cx.tol.takeover)
    {
        // gone, but the other nodes' takeover has not had its turn yet
        return;
    }
    let alive = node.filter(|n| !n.stopped && gone_since.is_some_and(|g| g <= 0));
    let Some(n) = alive else {
        let last = node.map_or(0, |n| n.heartbeat_at);
        add(
            Rule::NodeGone,
            match node {
                Some(n) if n.stopped => format!("live on node '{}', which stopped", s.node),
                Some(_) => format!(
                    "live on node '{}', silent for {} ms, and no node took its sessions over",
                    s.node,
                    cx.now - last
                ),
                None => format!("live on node '{}', which never sent a heartbeat", s.node),
            },
            vec![
                ("node", s.node.clone().into()),
                ("last_heartbeat", last.into()),
            ],
        );
        return;
    };
    // the node is alive: it must claim the session within the grace, and keep claiming it
    let grace = ms(cx.tol.owner_grace);
    let claimed = s.owner_seen_at.unwrap_or(0);
    let unclaimed_since = claimed.max(s.started_at).max(n.started_at);
    if cx.now - unclaimed_since > grace && n.heartbeat_at - claimed > grace {
        add(
            Rule::NoGuard,
            format!("live, but no guard on node '{}' has claimed it", s.node),
            vec![
                ("node", s.node.clone().into()),
                ("owner_seen_at", s.owner_seen_at.unwrap_or(0).into()),
                ("last_heartbeat", n.heartbeat_at.into()),
            ],
        );
    }
}

fn ended_rules(cx: &Ctx<'_>, s: &SessionFacts, end: i64, add: &mut Add<'_>) {
    let Some(env) = s.environment.as_deref() else {
        return;
    };
    if let Some((l, d, v)) = broken(cx, env, s.started_at, end, |p| p.max_session) {
        add(
            Rule::RecordedMaxSession,
            format!(
                "lasted {} ms in the registry, past its maximum of {} ms",
                end - s.started_at,
                ms(l)
            ),
            vec![
                ("started_at", s.started_at.into()),
                ("ended_at", end.into()),
                ("max_session_ms", ms(l).into()),
                ("deadline", d.into()),
                ("policy_version", v.into()),
            ],
        );
    }
    let Some(t) = s.recording.timeline() else {
        return;
    };
    let end_offset = end - s.started_at;
    if let Some(late) = t.activity_after_end(end_offset, ms(cx.tol.limit)) {
        add(
            Rule::ActivityAfterEnd,
            format!(
                "recording shows {} at {} ms, after the session ended at {} ms",
                late.what, late.at, late.end
            ),
            vec![
                ("activity_at_ms", late.at.into()),
                ("end_at_ms", late.end.into()),
                ("what", late.what.into()),
            ],
        );
    }
    let last = t.last_event();
    if last > end_offset
        && let Some((l, d, v)) = broken(cx, env, s.started_at, s.started_at + last, |p| {
            p.max_session
        })
    {
        add(
            Rule::RecordedMaxSession,
            format!("recording runs {last} ms, past its maximum of {} ms", ms(l)),
            vec![
                ("recorded_ms", last.into()),
                ("max_session_ms", ms(l).into()),
                ("deadline", d.into()),
                ("policy_version", v.into()),
            ],
        );
    }
    for gap in t.gaps(end_offset) {
        let (rule, limit): (Rule, fn(&EnvPolicy) -> Option<Duration>) = if gap.locked {
            (Rule::RecordedLockGrace, |p| Some(p.lock_grace))
        } else {
            (Rule::RecordedIdleGap, |p| p.idle_timeout)
        };
        let (from, to) = (s.started_at + gap.from, s.started_at + gap.to);
        if let Some((l, d, v)) = broken(cx, env, from, to, limit) {
            add(
                rule,
                format!(
                    "recording shows {} {} ms (from {} ms to {} ms), past the limit of {} ms",
                    if gap.locked {
                        "a lock of"
                    } else {
                        "an idle gap of"
                    },
                    gap.to - gap.from,
                    gap.from,
                    gap.to,
                    ms(l)
                ),
                vec![
                    ("from_ms", gap.from.into()),
                    ("to_ms", gap.to.into()),
                    ("limit_ms", ms(l).into()),
                    ("deadline", d.into()),
                    ("policy_version", v.into()),
                ],
            );
            break;
        }
    }
}

#[cfg(test)]
#[path = "detective_tests.rs"]
mod tests;
