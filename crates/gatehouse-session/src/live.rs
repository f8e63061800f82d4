//! The node's live sessions, as enforcement reaches them from outside: each front registers
//! a session's guard here, and one watcher per node carries policy changes and kill requests
//! from the store to the guards within a second. Shared by all fronts of one process, so a
//! node polls the store once, not once per front. The node's heartbeat claims the sessions
//! registered here, so a live row that no guard holds shows in the store, and writes what
//! their guards know (last activity, lock, next limit) for reviewers: every 2 s, and at once
//! when a session locks or unlocks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gatehouse_core::{Directive, EndReason, EnvPolicy};
use gatehouse_store::{AuditEvent, GuardState, KillRequest, Store};
use serde_json::json;
use tokio::sync::Notify;

use crate::GuardStatus;

/// How often the node looks for policy changes and kill requests in the store.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How often the node writes its heartbeat and claims its live sessions in the store.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// What the watcher tells a live session's guard.
#[derive(Debug, Clone)]
pub enum Control {
    Policy(EnvPolicy),
    Kill(EndReason),
}

type Deliver = Box<dyn Fn(Control) + Send + Sync>;

struct Entry {
    environment: String,
    /// Version of the environment policy the guard runs with.
    policy_version: i64,
    deliver: Deliver,
    /// What the guard knows, for the heartbeat (see [`LiveSessions::attach_status`]).
    status: Option<Arc<GuardStatus>>,
}

/// Guards of this node's live sessions, by session id.
pub struct LiveSessions {
    store: Store,
    node: String,
    entries: Mutex<HashMap<String, Entry>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Lock and unlock transitions of the guards: the heartbeat writes at once.
    transitions: Arc<Notify>,
}

impl LiveSessions {
    pub fn new(store: Store, node: String) -> Arc<LiveSessions> {
        Arc::new(LiveSessions {
            store,
            node,
            entries: Mutex::new(HashMap::new()),
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

    /// Registers a session's guard; `deliver` hands it policy changes and kills.
    pub fn register(
        &self,
        session_id: &str,
        environment: &str,
        policy_version: i64,
        deliver: impl Fn(Control) + Send + Sync + 'static,
    ) {
        if let Ok(mut e) = self.entries.lock() {
            e.insert(
                session_id.to_owned(),
                Entry {
                    environment: environment.to_owned(),
                    policy_version,
                    deliver: Box::new(deliver),
                    status: None,
                },
            );
        }
    }

    /// Lets the heartbeat write what a registered session's guard knows.
    pub fn attach_status(&self, session_id: &str, status: Arc<GuardStatus>) {
        status.notify_transitions(self.transitions.clone());
        if let Ok(mut e) = self.entries.lock()
            && let Some(entry) = e.get_mut(session_id)
        {
            entry.status = Some(status);
        }
    }

    /// What the guards of the sessions registered here know, `wall_now` (Unix ms) being now.
    pub fn guard_states(&self, wall_now: i64) -> Vec<(String, GuardState)> {
        let Ok(e) = self.entries.lock() else {
            return Vec::new();
        };
        e.iter()
            .filter_map(|(id, entry)| {
                let state = entry.status.as_ref()?.read(wall_now)?;
                Some((id.clone(), state))
            })
            .collect()
    }

    pub fn unregister(&self, session_id: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(session_id);
        }
    }

    /// Ids of the sessions whose guards run here.
    pub fn session_ids(&self) -> Vec<String> {
        self.entries
            .lock()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Writes the node's heartbeat every [`HEARTBEAT_INTERVAL`] until the task is aborted,
    /// claiming the sessions whose guards run here and writing what their guards know (also
    /// at once when one locks or unlocks). `started_at`: when the node started (Unix ms). A
    /// store that is down is logged once and retried.
    pub fn spawn_heartbeat(self: &Arc<Self>, started_at: i64) -> tokio::task::JoinHandle<()> {
        let live = Arc::downgrade(self);
        let transitions = self.transitions.clone();
        tokio::spawn(async move {
            let mut failing = false;
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
                let beat = live.store.node_heartbeat(
                    &live.node,
                    started_at,
                    env!("CARGO_PKG_VERSION"),
                    &ids,
                    &guards,
                );
                match beat.await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "cannot write the node heartbeat");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
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
    loop {
        tick.tick().await;
        let Some(live) = live.upgrade() else { return };
        let store = live.store.clone();
        let (policies, kills) = match tokio::try_join!(
            store.list_policies(),
            store.pending_kills(&live.node)
        ) {
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
            if let Some(p) = current.get(e.environment.as_str())
                && p.version != e.policy_version
            {
                e.policy_version = p.version;
                (e.deliver)(Control::Policy(p.policy.clone()));
            }
        }
        killed.retain(|id| entries.contains_key(id));
        for (id, request) in kills {
            let Some(e) = entries.get(&id) else { continue };
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
            Control::Policy(p) => crate::GuardEvent::Policy(p),
            Control::Kill(r) => crate::GuardEvent::Kill(r),
        }
    }
}
