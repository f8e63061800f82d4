//! The node's one registry of live connections and sessions, for every front: each
//! connection is tracked here from the moment it can be spoken to, and its session's guard
//! once it runs. One watcher per node carries policy changes and kill requests from the
//! store to the guards within a second; shutdown ends every connection of a front through
//! the same path (`end_all`). Shared by all fronts of one process, so a node polls the store
//! once, not once per front. The node's heartbeat claims the sessions registered here, so a
//! live row that no guard holds shows in the store (a third of them each beat, so each
//! every 6 s), and writes what their guards know (last activity, lock, next limit) for
//! reviewers: every 2 s for the guards that moved ([`GuardMoves`]), and at once when a
//! session locks or unlocks. Neither loop touches an idle session's memory on an ordinary
//! tick: with thousands of live sessions that alone cost a node a sizeable part of a core.
//! On PostgreSQL the watcher also wakes on
//! the store's change notifications (`Store::change_feed`), so a change reaches guards in
//! milliseconds; the poll stays as the fallback.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gatehouse_core::{Directive, EndReason, EnvPolicy, Protocol};
use gatehouse_store::{AuditEvent, GuardState, KillRequest, NodeInfo, Store};
use serde_json::json;

use crate::{GuardMoves, GuardStatus};

/// How often the node looks for policy changes and kill requests in the store.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the node writes its heartbeat and claims its live sessions in the store.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// The heartbeat claims its live sessions in this many turns, a share each beat: each
/// session every 6 s, within the detective's 10 s (`Tolerances::owner_grace`). After a beat
/// that failed, and at a beat more than half an interval late, it claims them all.
const CLAIM_TURNS: u64 = 3;

/// What the registry tells a live connection: its guard, or, before a guard runs (a
/// connection still logging in, a refused session), the front itself.
#[derive(Debug, Clone)]
pub enum Control {
    Policy(EnvPolicy),
    Kill(EndReason),
}

type Deliver = Box<dyn Fn(Control) + Send + Sync>;

/// A guarded session's registration.
struct Guarded {
    session_id: String,
    environment: String,
    /// Version of the environment policy the guard runs with.
    policy_version: i64,
    /// What the guard knows, for the heartbeat.
    status: Arc<GuardStatus>,
}

struct Entry {
    protocol: Protocol,
    guarded: Option<Guarded>,
    deliver: Deliver,
}

/// The node's live connections and their sessions' guards.
pub struct LiveSessions {
    store: Store,
    /// The node's id (kills and claims go by it).
    node: String,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Guards whose state may have moved, and lock transitions: read by the heartbeat.
    moves: Arc<GuardMoves>,
    /// Entries guarded since the watcher last looked (it checks their policy versions).
    fresh: Mutex<Vec<u64>>,
}

/// A connection's entry in the registry; dropping it removes the entry.
pub struct Registration {
    live: Weak<LiveSessions>,
    key: u64,
}

impl Registration {
    /// The connection's session is guarded from now on: policy changes and kills for
    /// `session_id` go to `deliver` (which replaces the connection's own), and the node's
    /// heartbeat writes what the guard knows (`status`).
    pub fn guard(
        &self,
        session_id: &str,
        environment: &str,
        policy_version: i64,
        status: Arc<GuardStatus>,
        deliver: impl Fn(Control) + Send + Sync + 'static,
    ) {
        let Some(live) = self.live.upgrade() else {
            return;
        };
        status.report_moves_to(live.moves.clone(), self.key);
        if let Ok(mut e) = live.entries.lock()
            && let Some(entry) = e.get_mut(&self.key)
        {
            entry.guarded = Some(Guarded {
                session_id: session_id.to_owned(),
                environment: environment.to_owned(),
                policy_version,
                status,
            });
            entry.deliver = Box::new(deliver);
        }
        if let Ok(mut f) = live.fresh.lock() {
            f.push(self.key);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(live) = self.live.upgrade()
            && let Ok(mut e) = live.entries.lock()
        {
            e.remove(&self.key);
        }
    }
}

impl LiveSessions {
    pub fn new(store: Store, node: String) -> Arc<LiveSessions> {
        Arc::new(LiveSessions {
            store,
            node,
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            watcher: Mutex::new(None),
            moves: Arc::new(GuardMoves::default()),
            fresh: Mutex::new(Vec::new()),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Starts the store watcher unless it runs already. It stops when the registry is
    /// dropped.
    pub fn ensure_watcher(self: &Arc<Self>) {
        let Ok(mut w) = self.watcher.lock() else {
            return;
        };
        if w.as_ref().is_none_or(|h| h.is_finished()) {
            *w = Some(tokio::spawn(watch_store(Arc::downgrade(self))));
        }
    }

    /// Tracks a live connection of `protocol`; `deliver` is how it is ended before a guard
    /// runs (at shutdown: `Control::Kill(EndReason::Shutdown)`).
    pub fn track(
        self: &Arc<Self>,
        protocol: Protocol,
        deliver: impl Fn(Control) + Send + Sync + 'static,
    ) -> Registration {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut e) = self.entries.lock() {
            e.insert(
                key,
                Entry {
                    protocol,
                    guarded: None,
                    deliver: Box::new(deliver),
                },
            );
        }
        Registration {
            live: Arc::downgrade(self),
            key,
        }
    }

    /// Ends every live connection of `protocol` with `reason` (through its guard, which
    /// tells the operator why, or through the front for a connection without one).
    /// Returns how many there were.
    pub fn end_all(&self, protocol: Protocol, reason: &EndReason) -> usize {
        let Ok(entries) = self.entries.lock() else {
            return 0;
        };
        let mine = entries.values().filter(|e| e.protocol == protocol);
        let mut n = 0;
        for e in mine {
            (e.deliver)(Control::Kill(reason.clone()));
            n += 1;
        }
        n
    }

    /// Live connections of `protocol`.
    pub fn count(&self, protocol: Protocol) -> usize {
        self.entries
            .lock()
            .map(|e| e.values().filter(|e| e.protocol == protocol).count())
            .unwrap_or(0)
    }

    /// What the guards of the sessions registered here know, `wall_now` (Unix ms) being now:
    /// every guard (`all`), or those that reported a move since the last read.
    fn guard_states(&self, wall_now: i64, all: bool) -> Vec<(u64, String, GuardState)> {
        // taken before the reads: a move reported meanwhile is read again next time
        let moved = self.moves.take();
        let Ok(e) = self.entries.lock() else {
            return Vec::new();
        };
        let read = |(key, e): (&u64, &Entry)| {
            let g = e.guarded.as_ref()?;
            Some((
                *key,
                g.session_id.clone(),
                g.status.read_reported(wall_now)?,
            ))
        };
        if all {
            e.iter().filter_map(read).collect()
        } else {
            moved
                .iter()
                .filter_map(|k| e.get_key_value(k))
                .filter_map(read)
                .collect()
        }
    }

    /// How many sessions are guarded here, and the ids of those to claim this beat.
    fn claims(&self, claim: Claim) -> (usize, Vec<String>) {
        let Ok(e) = self.entries.lock() else {
            return (0, Vec::new());
        };
        let mut count = 0;
        let mut ids = Vec::new();
        for (key, e) in e.iter() {
            let Some(g) = &e.guarded else { continue };
            count += 1;
            let claimed = match claim {
                Claim::All => true,
                Claim::Turn(t) => key % CLAIM_TURNS == t % CLAIM_TURNS,
                Claim::None => false,
            };
            if claimed {
                ids.push(g.session_id.clone());
            }
        }
        (count, ids)
    }

    /// Registration keys of the guarded sessions.
    fn guarded_keys(&self) -> HashSet<u64> {
        self.entries
            .lock()
            .map(|e| {
                e.iter()
                    .filter(|(_, e)| e.guarded.is_some())
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ids of the sessions whose guards run here.
    pub fn session_ids(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|e| {
                e.values()
                    .filter_map(|e| e.guarded.as_ref().map(|g| g.session_id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes the node's heartbeat every [`HEARTBEAT_INTERVAL`] until the task is aborted,
    /// claiming the sessions whose guards run here (a turn of them each beat) and writing
    /// what their guards know when it moved (also at once when one locks or unlocks). A
    /// guard whose row another node closed meanwhile (it declared this node lost) is told to
    /// end: nothing is closed twice and nothing closed comes back. A store that is down is
    /// logged once and retried; the beat after a failed or late one claims and writes all.
    pub fn spawn_heartbeat(self: &Arc<Self>, node: NodeInfo) -> tokio::task::JoinHandle<()> {
        let live = Arc::downgrade(self);
        let moves = self.moves.clone();
        tokio::spawn(async move {
            let mut failing = false;
            let mut told: HashSet<String> = HashSet::new();
            let mut written = WrittenGuards::default();
            let mut beats = Beats::default();
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let ticked = tokio::select! {
                    _ = tick.tick() => true,
                    () = moves.transitions.notified() => false,
                };
                let Some(live) = live.upgrade() else { return };
                let claim = beats.next(tokio::time::Instant::now(), ticked);
                let (count, ids) = live.claims(claim);
                let all = matches!(claim, Claim::All);
                let guards = live.guard_states(gatehouse_store::now_millis(), all);
                let changed = written.changed(guards);
                let rows: Vec<(String, GuardState)> =
                    changed.iter().map(|(_, id, g)| (id.clone(), *g)).collect();
                let started = std::time::Instant::now();
                let beat = live.store.node_heartbeat(&node, count, &ids, &rows).await;
                crate::metrics::store_round_trip("heartbeat", started.elapsed(), beat.is_ok());
                match beat {
                    Ok(closed) => {
                        failing = false;
                        beats.wrote();
                        written.wrote(changed);
                        if written.len() > count {
                            written.keep(&live.guarded_keys());
                        }
                        live.end_closed(&closed, &mut told);
                    }
                    Err(e) => {
                        // what was written is not known: all of it again next time
                        written.forget();
                        beats.failed();
                        if !failing {
                            failing = true;
                            tracing::error!(error = %e, "cannot write the node heartbeat");
                        }
                    }
                }
            }
        })
    }

    /// Ends the guards of sessions whose rows are closed already (each told once).
    fn end_closed(&self, closed: &[String], told: &mut HashSet<String>) {
        if closed.is_empty() && told.is_empty() {
            return;
        }
        let Ok(entries) = self.entries.lock() else {
            return;
        };
        let guarded: HashMap<&str, &Entry> = entries
            .values()
            .filter_map(|e| e.guarded.as_ref().map(|g| (g.session_id.as_str(), e)))
            .collect();
        told.retain(|id| guarded.contains_key(id.as_str()));
        for id in closed {
            if let Some(e) = guarded.get(id.as_str())
                && told.insert(id.clone())
            {
                tracing::warn!(session_id = %id, "session closed by another node (this node was declared lost); ending it");
                (e.deliver)(Control::Kill(EndReason::Interrupted));
            }
        }
    }

    /// Guarded sessions by protocol and environment (for the live-session gauge).
    pub fn census(&self) -> Vec<(Protocol, String, usize)> {
        let mut counts: HashMap<(Protocol, &str), usize> = HashMap::new();
        let Ok(entries) = self.entries.lock() else {
            return Vec::new();
        };
        for e in entries.values() {
            if let Some(g) = &e.guarded {
                *counts
                    .entry((e.protocol, g.environment.as_str()))
                    .or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|((p, env), n)| (p, env.to_owned(), n))
            .collect()
    }

    /// Guarded sessions.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|e| e.values().filter(|e| e.guarded.is_some()).count())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for LiveSessions {
    fn drop(&mut self) {
        if let Ok(mut w) = self.watcher.lock()
            && let Some(h) = w.take()
        {
            h.abort();
        }
    }
}

/// Carries policy changes and kill requests from the store to live guards until the
/// registry goes away; a store that is down is logged and retried.
async fn watch_store(live: Weak<LiveSessions>) {
    let mut killed: HashSet<String> = HashSet::new();
    // the policy versions the last look saw (a change: every session is looked at)
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut store_down = false;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // on PostgreSQL a change wakes the watcher at once; the tick stays as the fallback
    let feed = match live.upgrade() {
        Some(l) => l.store.change_feed(),
        None => return,
    };
    loop {
        let notified = tokio::select! {
            _ = tick.tick() => None,
            sent = feed.changed() => sent,
        };
        let Some(live) = live.upgrade() else { return };
        let store = live.store.clone();
        let started = std::time::Instant::now();
        let read = tokio::try_join!(store.list_policies(), store.pending_kills(&live.node));
        crate::metrics::store_round_trip("watch", started.elapsed(), read.is_ok());
        let (policies, kills) = match read {
            Ok(r) => r,
            Err(e) => {
                if !store_down {
                    tracing::error!(error = %e, "store unavailable: policy changes and kills wait for it");
                }
                store_down = true;
                continue;
            }
        };
        if store_down {
            tracing::info!("store available again");
            store_down = false;
        }
        let Ok(mut entries) = live.entries.lock() else {
            return;
        };
        let fresh = live
            .fresh
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        let current: HashMap<&str, _> = policies
            .iter()
            .map(|p| (p.environment.as_str(), p))
            .collect();
        let deliver = |e: &mut Entry| {
            let Some(g) = e.guarded.as_mut() else {
                return;
            };
            if let Some(p) = current.get(g.environment.as_str())
                && p.version != g.policy_version
            {
                g.policy_version = p.version;
                (e.deliver)(Control::Policy(p.policy.clone()));
            }
        };
        // every session when a policy changed; otherwise only those guarded since the last
        // look (they may have started with a version older than the store's): an idle
        // session's memory is not touched twice a second
        let seen_now: HashMap<String, i64> = policies
            .iter()
            .map(|p| (p.environment.clone(), p.version))
            .collect();
        if seen_now != seen {
            entries.values_mut().for_each(deliver);
            seen = seen_now;
        } else {
            for key in fresh {
                if let Some(e) = entries.get_mut(&key) {
                    deliver(e);
                }
            }
        }
        // (the index of every session only when there is a kill to deliver or remember: a
        // tick twice a second must not cost the node its size)
        if !kills.is_empty() || !killed.is_empty() {
            let by_session: HashMap<&str, &Entry> = entries
                .values()
                .filter_map(|e| e.guarded.as_ref().map(|g| (g.session_id.as_str(), e)))
                .collect();
            killed.retain(|id| by_session.contains_key(id.as_str()));
            for (id, request) in kills {
                let Some(e) = by_session.get(id.as_str()) else {
                    continue;
                };
                if !killed.insert(id) {
                    continue;
                }
                let reason = match request {
                    KillRequest::Admin(why) => EndReason::AdminKill(why),
                    KillRequest::OperatorLocked => EndReason::OperatorLocked,
                };
                (e.deliver)(Control::Kill(reason));
            }
        }
        if let Some(sent) = notified {
            crate::metrics::notify_applied(sent, gatehouse_store::now_millis());
        }
    }
}

/// The recording marker for a directive the guard carried out.
pub fn marker_label(d: &Directive) -> String {
    match d {
        Directive::Warn { message, .. } => format!("warning: {message}"),
        Directive::Lock { message, .. } => format!("locked: {message}"),
        Directive::Unlocked => "unlocked: reauthenticated".into(),
        Directive::UnlockFailed { attempts_left } => {
            format!("reauthentication failed ({attempts_left} attempts left)")
        }
        Directive::End { reason, message } => {
            format!("end: {message} ({})", reason.to_stored())
        }
    }
}

/// Writes the structured log line for a directive the guard carried out and queues its
/// audit event. Enforcement never waits on the store: the write runs in its own task (the
/// store retries and counts a failed write), so a slow or hung store cannot delay a lock
/// or an end.
pub fn audit_directive(store: &Store, operator: &str, session_id: &str, d: &Directive) {
    let (kind, detail) = match d {
        Directive::Warn {
            kind,
            remaining,
            message,
        } => (
            "enforcement_warning",
            json!({"limit": kind.as_str(), "remaining_ms": remaining.as_millis() as u64, "message": message}),
        ),
        Directive::Lock { reason, message } => (
            "session_locked",
            json!({"reason": reason.as_str(), "message": message}),
        ),
        Directive::Unlocked => ("session_unlocked", json!({})),
        Directive::UnlockFailed { attempts_left } => {
            ("reauth_failed", json!({"attempts_left": attempts_left}))
        }
        Directive::End { reason, message } => (
            "enforcement_end",
            json!({"reason": reason.to_stored(), "message": message}),
        ),
    };
    crate::metrics::enforcement_action(match d {
        Directive::Warn { .. } => "warn",
        Directive::Lock { .. } => "lock",
        Directive::Unlocked => "unlock",
        Directive::UnlockFailed { .. } => "unlock_failed",
        Directive::End { .. } => "end",
    });
    tracing::info!(kind, %detail, "enforcement");
    store.audit_later(&AuditEvent {
        kind,
        operator: Some(operator),
        session_id: Some(session_id),
        source: None,
        detail,
    });
}

impl<C> From<Control> for crate::GuardEvent<C> {
    fn from(c: Control) -> Self {
        match c {
            Control::Policy(p) => crate::GuardEvent::Policy(Box::new(p)),
            Control::Kill(r) => crate::GuardEvent::Kill(r),
        }
    }
}
/// Which of its sessions a beat claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    All,
    /// Those whose registration key falls in this turn (modulo [`CLAIM_TURNS`]).
    Turn(u64),
    /// None (a beat for a lock or unlock).
    None,
}

/// Which sessions each beat claims (and whether it reads every guard: `Claim::All`).
#[derive(Debug)]
struct Beats {
    /// Everything at the next beat: the first, and the one after a beat that failed.
    all: bool,
    turn: u64,
    previous: Option<tokio::time::Instant>,
}

impl Default for Beats {
    fn default() -> Self {
        Beats {
            all: true,
            turn: 0,
            previous: None,
        }
    }
}

impl Beats {
    /// The claim of a beat at `now`: `ticked` at the interval, else for a lock transition.
    /// A beat more than half an interval late claims everything too: beats slowed by a
    /// busy store would stretch the turns past the detective's grace, and a stalled
    /// process may have been declared lost meanwhile (its closed rows are found at once).
    fn next(&mut self, now: tokio::time::Instant, ticked: bool) -> Claim {
        if self
            .previous
            .is_some_and(|p| now - p > HEARTBEAT_INTERVAL * 3 / 2)
        {
            self.all = true;
        }
        self.previous = Some(now);
        if self.all {
            Claim::All
        } else if ticked {
            self.turn += 1;
            Claim::Turn(self.turn)
        } else {
            Claim::None
        }
    }

    /// The beat was written: turns again from the next.
    fn wrote(&mut self) {
        self.all = false;
    }

    /// The beat failed: what it wrote is not known, so everything next time.
    fn failed(&mut self) {
        self.all = true;
    }
}

/// What the heartbeat last wrote of each live guard, so that a beat writes only the guards
/// whose state moved: an idle session's state stays put, and writing every guard every
/// beat cost a node with 1,000 idle sessions ~10 % of a core (500 row updates a second).
#[derive(Debug, Default)]
struct WrittenGuards(HashMap<u64, GuardState>);

impl WrittenGuards {
    /// A wall time read through a monotonic clock moves by a millisecond or so from one beat
    /// to the next; a move within this is no change.
    const JITTER_MS: i64 = 100;

    /// The states in `now` (registration key, session id, state) that differ from what was
    /// written.
    fn changed(&self, now: Vec<(u64, String, GuardState)>) -> Vec<(u64, String, GuardState)> {
        now.into_iter()
            .filter(|(key, _, g)| self.0.get(key).is_none_or(|w| !Self::same(w, g)))
            .collect()
    }

    /// `changed` was written.
    fn wrote(&mut self, changed: Vec<(u64, String, GuardState)>) {
        self.0
            .extend(changed.into_iter().map(|(key, _, g)| (key, g)));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Forgets the guards not in `live` (ended sessions).
    fn keep(&mut self, live: &HashSet<u64>) {
        self.0.retain(|key, _| live.contains(key));
    }

    fn forget(&mut self) {
        self.0.clear();
    }

    fn same(a: &GuardState, b: &GuardState) -> bool {
        let near = |x: i64, y: i64| x.abs_diff(y) <= Self::JITTER_MS.unsigned_abs();
        near(a.last_activity_at, b.last_activity_at)
            && match (a.locked_since, b.locked_since) {
                (Some(x), Some(y)) => near(x, y),
                (None, None) => true,
                _ => false,
            }
            && match (a.next_limit, b.next_limit) {
                (Some((k, x)), Some((l, y))) => k == l && near(x, y),
                (None, None) => true,
                _ => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::WarnKind;

    fn state(activity: i64, locked: Option<i64>, next: Option<(WarnKind, i64)>) -> GuardState {
        GuardState {
            last_activity_at: activity,
            locked_since: locked,
            next_limit: next,
        }
    }

    #[test]
    fn a_beat_writes_only_the_guards_whose_state_moved() {
        let mut w = WrittenGuards::default();
        let idle = state(1_000, None, Some((WarnKind::Idle, 61_000)));
        let busy = state(1_000, None, Some((WarnKind::Idle, 61_000)));
        let first = vec![(1, "idle".to_owned(), idle), (2, "busy".to_owned(), busy)];
        assert_eq!(w.changed(first.clone()), first, "everything at first");
        w.wrote(first);
        // a beat later: the idle one's times read a millisecond apart, the busy one typed
        let later = vec![
            (
                1,
                "idle".to_owned(),
                state(1_001, None, Some((WarnKind::Idle, 60_999))),
            ),
            (
                2,
                "busy".to_owned(),
                state(3_000, None, Some((WarnKind::Idle, 63_000))),
            ),
        ];
        let changed = w.changed(later.clone());
        assert_eq!(changed, vec![later[1].clone()]);
        w.wrote(changed);
        assert!(w.changed(later.clone()).is_empty(), "nothing moved since");
        // a lock, and a next limit of another kind, are changes however close in time
        let locked = vec![(
            1,
            "idle".to_owned(),
            state(1_001, Some(1_050), Some((WarnKind::Idle, 60_999))),
        )];
        assert_eq!(w.changed(locked).len(), 1);
        let other = vec![(
            1,
            "idle".to_owned(),
            state(1_001, None, Some((WarnKind::MaxSession, 60_999))),
        )];
        assert_eq!(w.changed(other).len(), 1);
        // an ended session is forgotten; a failed beat writes everything again
        w.keep(&HashSet::from([2]));
        assert_eq!(w.len(), 1);
        assert!(w.changed(later[1..].to_vec()).is_empty());
        w.forget();
        assert_eq!(w.changed(later[1..].to_vec()).len(), 1);
    }

    #[test]
    fn beats_claim_everything_first_then_in_turns_and_everything_again_when_late_or_failed() {
        let t0 = tokio::time::Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Beats::default();
        assert_eq!(b.next(at(0), true), Claim::All);
        b.wrote();
        let turns: Vec<Claim> = [2_000, 4_000, 6_000].map(|ms| b.next(at(ms), true)).into();
        assert_eq!(turns, [Claim::Turn(1), Claim::Turn(2), Claim::Turn(3)]);
        // each session's key falls in exactly one turn of any CLAIM_TURNS in a row
        let residues: HashSet<u64> = [1, 2, 3].iter().map(|t| t % CLAIM_TURNS).collect();
        assert_eq!(residues.len() as u64, CLAIM_TURNS);
        // a lock between ticks writes the guards, claims nothing
        assert_eq!(b.next(at(6_500), false), Claim::None);
        // beats slowed past half an interval (a busy store): everything
        assert_eq!(b.next(at(8_000), true), Claim::Turn(4));
        assert_eq!(b.next(at(11_100), true), Claim::All);
        b.wrote();
        assert_eq!(b.next(at(13_100), true), Claim::Turn(5));
        // a failed beat: everything next time
        b.failed();
        assert_eq!(b.next(at(15_100), true), Claim::All);
    }

    async fn store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::open(&url, gatehouse_store::MasterKey::generate())
            .await
            .unwrap();
        store.add_environment("prod").await.unwrap();
        store
    }

    fn guarded(
        live: &Arc<LiveSessions>,
        id: &str,
        version: i64,
        deliver: impl Fn(Control) + Send + Sync + 'static,
    ) -> (Registration, Arc<crate::ActivityClock>) {
        let reg = live.track(Protocol::Ssh, |_| {});
        let clock = Arc::new(crate::ActivityClock::new(tokio::time::Instant::now()));
        let status = Arc::new(GuardStatus::new(
            clock.clone(),
            gatehouse_core::Enforcer::new(EnvPolicy::default()),
        ));
        reg.guard(id, "prod", version, status, deliver);
        (reg, clock)
    }

    fn ids(states: Vec<(u64, String, GuardState)>) -> Vec<String> {
        let mut ids: Vec<String> = states.into_iter().map(|(_, id, _)| id).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn a_beat_reads_only_the_guards_that_moved_and_claims_each_session_in_one_turn() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveSessions::new(store(&dir).await, "n".into());
        let _login = live.track(Protocol::Ssh, |_| {}); // not guarded: never claimed
        let mut sessions: Vec<_> = (0..7)
            .map(|i| guarded(&live, &format!("s{i}"), 1, |_| {}))
            .collect();
        let all: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
        // each guard is reported once registered, and not again until it moves
        assert_eq!(ids(live.guard_states(0, false)), all);
        assert!(live.guard_states(0, false).is_empty());
        sessions[2].1.touch();
        sessions[5].1.touch();
        sessions[5].1.touch();
        assert_eq!(ids(live.guard_states(0, false)), ["s2", "s5"]);
        assert!(live.guard_states(0, false).is_empty());
        // after a failed beat: all of them, moved or not
        assert_eq!(ids(live.guard_states(0, true)), all);
        // the turns share the sessions out, each in exactly one
        let (count, mut claimed) = live.claims(Claim::All);
        claimed.sort();
        assert_eq!((count, claimed), (7, all.clone()));
        let mut turns: Vec<String> = (0..CLAIM_TURNS)
            .flat_map(|t| live.claims(Claim::Turn(t + 5)).1)
            .collect();
        turns.sort();
        assert_eq!(turns, all);
        assert_eq!(live.claims(Claim::None), (7, Vec::new()));
        // an ended session: neither read nor claimed, and a move of it reported late is
        // ignored
        let (gone, clock) = sessions.remove(3);
        drop(gone);
        clock.touch();
        assert!(live.guard_states(0, false).is_empty());
        assert_eq!(live.claims(Claim::All).0, 6);
        assert_eq!(live.guarded_keys().len(), 6);
    }

    #[tokio::test]
    async fn a_policy_change_reaches_every_session_and_a_late_starter_with_an_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let v1 = store.list_policies().await.unwrap()[0].version;
        let live = LiveSessions::new(store.clone(), "n".into());
        live.ensure_watcher();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(&'static str, i64)>();
        let told = |who: &'static str| {
            let tx = tx.clone();
            move |c: Control| {
                if let Control::Policy(p) = c {
                    let _ = tx.send((
                        who,
                        i64::try_from(p.idle_timeout.unwrap().as_secs()).unwrap(),
                    ));
                }
            }
        };
        let _old = guarded(&live, "old", v1, told("old"));
        let recv = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
            tokio::time::timeout(4 * WATCH_INTERVAL, rx.recv()).await
        };
        assert!(recv(&mut rx).await.is_err(), "nothing changed");
        let p = EnvPolicy {
            idle_timeout: Some(Duration::from_secs(600)),
            ..EnvPolicy::default()
        };
        store.set_environment_policy("prod", &p).await.unwrap();
        assert_eq!(recv(&mut rx).await.unwrap(), Some(("old", 600)));
        // the watcher has seen the new version; a session admitted with the old one before
        // the change registers now: it is told too
        tokio::time::sleep(2 * WATCH_INTERVAL).await;
        let _late = guarded(&live, "late", v1, told("late"));
        assert_eq!(recv(&mut rx).await.unwrap(), Some(("late", 600)));
        // one admitted with the current version is not told again, nor are the others
        let v2 = store.list_policies().await.unwrap()[0].version;
        let _new = guarded(&live, "new", v2, told("new"));
        assert!(recv(&mut rx).await.is_err());
    }
}
