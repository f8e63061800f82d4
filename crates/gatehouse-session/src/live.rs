//! The node's one registry of live connections and sessions, for every front: each
//! connection is tracked here from the moment it can be spoken to, and its session's guard
//! once it runs. One watcher per node carries policy changes and kill requests from the
//! store to the guards within a second; shutdown ends every connection of a front through
//! the same path (`end_all`). Shared by all fronts of one process, so a node polls the store
//! once, not once per front. The node's heartbeat claims the sessions registered here, so a
//! live row that no guard holds shows in the store, and writes what their guards know (last
//! activity, lock, next limit) for reviewers: every 2 s, and at once when a session locks
//! or unlocks. On PostgreSQL the watcher also wakes on
//! the store's change notifications (`Store::change_feed`), so a change reaches guards in
//! milliseconds; the poll stays as the fallback.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gatehouse_core::{Directive, EndReason, EnvPolicy, Protocol};
use gatehouse_store::{AuditEvent, GuardState, KillRequest, NodeInfo, Store};
use serde_json::json;
use tokio::sync::Notify;

use crate::GuardStatus;

/// How often the node looks for policy changes and kill requests in the store.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the node writes its heartbeat and claims its live sessions in the store.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

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
    /// Lock and unlock transitions of the guards: the heartbeat writes at once.
    transitions: Arc<Notify>,
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
        status.notify_transitions(live.transitions.clone());
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
            transitions: Arc::new(Notify::new()),
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

    /// What the guards of the sessions registered here know, `wall_now` (Unix ms) being now.
    pub fn guard_states(&self, wall_now: i64) -> Vec<(String, GuardState)> {
        let Ok(e) = self.entries.lock() else {
            return Vec::new();
        };
        e.values()
            .filter_map(|e| {
                let g = e.guarded.as_ref()?;
                Some((g.session_id.clone(), g.status.read(wall_now)?))
            })
            .collect()
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
    /// claiming the sessions whose guards run here and writing what their guards know (also
    /// at once when one locks or unlocks). A guard whose row another node closed
    /// meanwhile (it declared this node lost) is told to end: nothing is closed twice and
    /// nothing closed comes back. A store that is down is logged once and retried.
    pub fn spawn_heartbeat(self: &Arc<Self>, node: NodeInfo) -> tokio::task::JoinHandle<()> {
        let live = Arc::downgrade(self);
        let transitions = self.transitions.clone();
        tokio::spawn(async move {
            let mut failing = false;
            let mut told: HashSet<String> = HashSet::new();
            let mut written = WrittenGuards::default();
            let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = transitions.notified() => {}
                }
                let Some(live) = live.upgrade() else { return };
                let ids = live.session_ids();
                let guards = live.guard_states(gatehouse_store::now_millis());
                let changed = written.changed(&guards);
                let started = std::time::Instant::now();
                let beat = live.store.node_heartbeat(&node, &ids, &changed).await;
                crate::metrics::store_round_trip("heartbeat", started.elapsed(), beat.is_ok());
                match beat {
                    Ok(closed) => {
                        failing = false;
                        written.wrote(changed, &guards);
                        live.end_closed(&closed, &mut told);
                    }
                    Err(e) => {
                        // what was written is not known: all of it again next time
                        written.forget();
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
        let current: HashMap<&str, _> = policies
            .iter()
            .map(|p| (p.environment.as_str(), p))
            .collect();
        for e in entries.values_mut() {
            let Some(g) = e.guarded.as_mut() else {
                continue;
            };
            if let Some(p) = current.get(g.environment.as_str())
                && p.version != g.policy_version
            {
                g.policy_version = p.version;
                (e.deliver)(Control::Policy(p.policy.clone()));
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
/// What the heartbeat last wrote of each live guard, so that a beat writes only the guards
/// whose state moved: an idle session's state stays put, and writing every guard every
/// beat cost a node with 1,000 idle sessions ~10 % of a core (500 row updates a second).
#[derive(Debug, Default)]
struct WrittenGuards(HashMap<String, GuardState>);

impl WrittenGuards {
    /// A wall time read through a monotonic clock moves by a millisecond or so from one beat
    /// to the next; a move within this is no change.
    const JITTER_MS: i64 = 100;

    /// The states in `now` that differ from what was written.
    fn changed(&self, now: &[(String, GuardState)]) -> Vec<(String, GuardState)> {
        now.iter()
            .filter(|(id, g)| self.0.get(id).is_none_or(|w| !Self::same(w, g)))
            .cloned()
            .collect()
    }

    /// `changed` was written; `now` is every live guard (the others are forgotten).
    fn wrote(&mut self, changed: Vec<(String, GuardState)>, now: &[(String, GuardState)]) {
        if self.0.len() > now.len() {
            let live: HashSet<&str> = now.iter().map(|(id, _)| id.as_str()).collect();
            self.0.retain(|id, _| live.contains(id.as_str()));
        }
        self.0.extend(changed);
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
        let first = vec![("idle".to_owned(), idle), ("busy".to_owned(), busy)];
        assert_eq!(w.changed(&first), first, "everything at first");
        w.wrote(w.changed(&first), &first);
        // a beat later: the idle one's times read a millisecond apart, the busy one typed
        let later = vec![
            (
                "idle".to_owned(),
                state(1_001, None, Some((WarnKind::Idle, 60_999))),
            ),
            (
                "busy".to_owned(),
                state(3_000, None, Some((WarnKind::Idle, 63_000))),
            ),
        ];
        let changed = w.changed(&later);
        assert_eq!(changed, vec![later[1].clone()]);
        w.wrote(changed, &later);
        assert!(w.changed(&later).is_empty(), "nothing moved since");
        // a lock, and a next limit of another kind, are changes however close in time
        let locked = vec![(
            "idle".to_owned(),
            state(1_001, Some(1_050), Some((WarnKind::Idle, 60_999))),
        )];
        assert_eq!(w.changed(&locked).len(), 1);
        let other = vec![(
            "idle".to_owned(),
            state(1_001, None, Some((WarnKind::MaxSession, 60_999))),
        )];
        assert_eq!(w.changed(&other).len(), 1);
        // an ended session is forgotten; a failed beat writes everything again
        w.wrote(Vec::new(), &later[1..]);
        assert_eq!(w.0.len(), 1);
        w.forget();
        assert_eq!(w.changed(&later[1..]).len(), 1);
    }
}
