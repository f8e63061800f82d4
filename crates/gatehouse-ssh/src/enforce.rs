//! Enforcement wired to SSH: the guard's `OperatorIo` on a russh server handle, its
//! reauthenticator on the store's password hash, its observer writing audit events, and the
//! broker-wide watcher that carries policy changes and admin kills from the store to live
//! guards within a second.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Directive, EndReason};
use gatehouse_store::{AuditEvent, KillRequest, Store, passwords};
use russh::ChannelId;
use russh::server;
use serde_json::json;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::connection::ConnectionState;
use crate::guard::{GuardEvent, GuardObserver, OperatorIo, Reauthenticator};

/// How often the broker looks for policy changes and kill requests in the store.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// How long an ended session's channels get to drain before the disconnect.
const END_LINGER: Duration = Duration::from_millis(300);

pub(crate) type GuardSender = mpsc::UnboundedSender<GuardEvent<ChannelId>>;

/// A live session's guard, as the watcher reaches it.
pub(crate) struct GuardControl {
    pub(crate) environment: String,
    /// Version of the environment policy the guard runs with.
    pub(crate) policy_version: i64,
    pub(crate) events: GuardSender,
}

pub(crate) struct SshOperator {
    pub(crate) handle: server::Handle,
}

impl OperatorIo<ChannelId> for SshOperator {
    async fn write(&self, channel: ChannelId, stderr: bool, text: String) {
        let _ = if stderr {
            self.handle
                .extended_data(channel, 1, text.into_bytes())
                .await
        } else {
            self.handle.data(channel, text.into_bytes()).await
        };
    }

    async fn end(&self, channels: Vec<ChannelId>, message: String) {
        // OpenSSH exits at a disconnect without writing output it still buffers, which
        // would lose the end line: close the channels first and give the client a moment
        // to print and close its side.
        for channel in channels {
            let _ = self.handle.eof(channel).await;
            let _ = self.handle.close(channel).await;
        }
        tokio::time::sleep(END_LINGER).await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, message, "en".into())
            .await;
    }
}

pub(crate) struct StoreReauth {
    pub(crate) store: Store,
    pub(crate) operator: String,
    pub(crate) has_password: bool,
    pub(crate) has_totp: bool,
}

impl Reauthenticator for StoreReauth {
    fn available(&self) -> bool {
        self.has_password
    }

    async fn check_password(&self, answer: String) -> bool {
        let stored = match self.store.operator(&self.operator).await {
            Ok(Some(o)) if !o.locked => o.password_hash,
            _ => None,
        };
        tokio::task::spawn_blocking(move || passwords::verify_password(&answer, stored.as_deref()))
            .await
            .unwrap_or(false)
    }

    fn wants_code(&self) -> bool {
        self.has_totp
    }

    async fn check_code(&self, answer: String) -> bool {
        self.store
            .verify_totp(&self.operator, &answer)
            .await
            .unwrap_or(false)
    }
}

pub(crate) struct AuditObserver {
    pub(crate) store: Store,
    pub(crate) state: Arc<ConnectionState>,
    pub(crate) session_id: String,
    pub(crate) operator: String,
}

impl GuardObserver for AuditObserver {
    async fn directive(&self, d: &Directive) {
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
            Directive::End { reason, message } => {
                self.state.set_end_reason(reason.clone());
                (
                    "enforcement_end",
                    json!({"reason": reason.to_stored(), "message": message}),
                )
            }
        };
        tracing::info!(kind, %detail, "enforcement");
        if let Some(rec) = self.state.recorder.get() {
            let label = match d {
                Directive::Warn { message, .. } => format!("warning: {message}"),
                Directive::Lock { message, .. } => format!("locked: {message}"),
                Directive::Unlocked => "unlocked: reauthenticated".into(),
                Directive::UnlockFailed { attempts_left } => {
                    format!("reauthentication failed ({attempts_left} attempts left)")
                }
                Directive::End { reason, message } => {
                    format!("end: {message} ({})", reason.to_stored())
                }
            };
            rec.marker(label);
        }
        let _ = self
            .store
            .audit(&AuditEvent {
                kind,
                operator: Some(&self.operator),
                session_id: Some(&self.session_id),
                source: None,
                detail,
            })
            .await;
    }
}

/// Carries policy changes and kill requests from the store to live guards. Runs until the
/// broker stops; a store that is down is logged and retried.
pub(crate) async fn watch_store(broker: Arc<Broker>) {
    let mut killed: HashSet<String> = HashSet::new();
    let mut store_down = false;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = broker.store();
        let (policies, kills) = match tokio::try_join!(
            store.list_policies(),
            store.pending_kills(&broker.config.node)
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
        let Ok(mut guards) = broker.guards.lock() else {
            return;
        };
        let current: HashMap<&str, _> = policies
            .iter()
            .map(|p| (p.environment.as_str(), p))
            .collect();
        for g in guards.values_mut() {
            if let Some(p) = current.get(g.environment.as_str())
                && p.version != g.policy_version
            {
                g.policy_version = p.version;
                let _ = g.events.send(GuardEvent::Policy(p.policy.clone()));
            }
        }
        killed.retain(|id| guards.contains_key(id));
        for (id, request) in kills {
            let Some(g) = guards.get(&id) else { continue };
            if !killed.insert(id) {
                continue;
            }
            let reason = match request {
                KillRequest::Admin(why) => EndReason::AdminKill(why),
                KillRequest::OperatorLocked => EndReason::OperatorLocked,
            };
            let _ = g.events.send(GuardEvent::Kill(reason));
        }
    }
}
