//! The session lifecycle every front shares, so that each rule exists once: admission (the
//! access decision, the session row and the login's audit events — fail closed), the
//! recording's registration and its failure rule, the guard's wiring into the node's live
//! registry, and the end (seal the recording, close the row, audit). A front brings only
//! its protocol: how it authenticates, talks to the target and shows the operator a message.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use gatehouse_core::{
    AccessDecision, AccessFacts, DenyReason, Directive, EndReason, Protocol, decide_access,
    validate_name,
};
use gatehouse_recorder::{RecordError, RecorderHandle, Sealed};
use gatehouse_store::{AuditEvent, NewSession, Store, StoreError, StoredPolicy, TargetRecord};
use serde_json::{Value, json};

use crate::live::Registration;
use crate::{
    ActivityClock, Guard, GuardEvents, GuardObserver, OperatorIo, Reauthenticator, SessionGate,
    audit_directive, marker_label,
};

/// Why a session ends. Many parts of a session may name a reason (the guard, the client
/// closing, the target closing, shutdown); the first one given wins.
#[derive(Debug, Default)]
pub struct EndReasonCell(Mutex<Option<EndReason>>);

impl EndReasonCell {
    pub fn set(&self, reason: EndReason) {
        if let Ok(mut r) = self.0.lock() {
            r.get_or_insert(reason);
        }
    }

    pub fn get(&self) -> Option<EndReason> {
        self.0.lock().ok().and_then(|r| r.clone())
    }
}

/// A successful login, as the front saw it.
pub struct Login<'a> {
    pub protocol: Protocol,
    /// The node's display name and id.
    pub node: &'a str,
    pub node_id: &'a str,
    pub peer: SocketAddr,
    pub operator: &'a str,
    /// The target the operator asked for; `None` when the login named none (SSH `alice@…`).
    pub target: Option<&'a str>,
    /// How the operator authenticated (`publickey`, `password`, `scram-sha-256`, …).
    pub method: &'a str,
    /// Fields added to the `session_start` audit event (PostgreSQL: the startup parameters
    /// passed through).
    pub start_detail: serde_json::Map<String, Value>,
}

/// Who a registered session is, for everything that writes about it.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    pub id: String,
    pub operator: String,
    /// The target name the operator gave (empty when none).
    pub target: String,
    pub environment: Option<String>,
    pub protocol: Protocol,
    pub peer: SocketAddr,
}

/// What an allowed session starts with, all read at login.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub target: TargetRecord,
    pub policy: StoredPolicy,
    /// Whether the operator can unlock a locked session with a password, and then a code.
    pub has_password: bool,
    pub has_totp: bool,
    /// Whether the statement log leaves bound parameters out (PostgreSQL targets; read
    /// with the policy, one round trip, and `true` when it cannot be read).
    pub redact_params: bool,
}

#[derive(Debug, Clone)]
pub enum Access {
    Allowed(Box<Allowed>),
    Denied {
        /// `None` when no target was named.
        reason: Option<DenyReason>,
        /// What the operator is told.
        message: String,
    },
}

/// The outcome of [`admit`]: the session row (absent only when the target name was not even
/// a valid name, which never reaches the registry) and whether it may go on.
#[derive(Debug, Clone)]
pub struct Admission {
    pub session: Option<SessionIdentity>,
    pub access: Access,
}

/// Decides whether the operator may reach the target, registers the session (allowed or
/// denied: a denial is a session row too, ended `access_denied` by the front when it has
/// told the operator) and audits `auth_success` and `session_start` or `access_denied`.
/// Fail closed: if any of this cannot be written, the login does not go on (`Err`; a row
/// already written is closed as an error).
pub async fn admit(store: &Store, login: &Login<'_>) -> Result<Admission, StoreError> {
    let operator = login.operator;
    let source = login.peer.to_string();
    let protocol = login.protocol.as_str();
    let Some(target) = login.target else {
        let message = format!("no target selected: connect as {operator}+TARGET@…");
        return register(store, login, None, None, message).await;
    };
    if validate_name("target", target).is_err() {
        // refused like an unknown target, before a session row sees the name (it would
        // reach the review screens); the operator gets their own input back, escaped and cut
        let shown: String = target.escape_debug().take(64).collect();
        tracing::warn!(name = %shown, "access denied: invalid target name");
        store
            .audit(&AuditEvent {
                kind: "access_denied",
                operator: Some(operator),
                session_id: None,
                source: Some(&source),
                detail: json!({"target": shown, "reason": "invalid_target_name", "protocol": protocol}),
            })
            .await?;
        let reason = DenyReason::UnknownTarget;
        return Ok(Admission {
            session: None,
            access: Access::Denied {
                reason: Some(reason),
                message: reason.operator_message(&shown),
            },
        });
    }
    // independent reads at once (each on a pooled connection of its own; SQLite's WAL lets
    // readers run side by side), the target joined with its environment: a login waits for
    // one store round trip here, not four
    let (record, account, grants) = tokio::try_join!(
        store.target_with_policy(target),
        store.operator(operator),
        store.granted_environments(operator),
    )?;
    let facts = AccessFacts {
        operator_locked: account.as_ref().is_some_and(|o| o.locked),
        target: record
            .as_ref()
            .map(|(r, _)| (r.environment.as_str(), r.protocol())),
        granted_environments: &grants,
        protocol: login.protocol,
    };
    let reason = match (decide_access(&facts), record) {
        (AccessDecision::Allow, Some((r, policy))) => {
            // the target's row came joined with its environment's (policy and redaction
            // setting); whether the operator has TOTP came with the operator's row
            let redact_params = match r.protocol() {
                Protocol::Postgres => policy.redact_params,
                Protocol::Ssh => true,
            };
            let allowed = Allowed {
                policy,
                has_password: account.as_ref().is_some_and(|o| o.password_hash.is_some()),
                has_totp: account.is_some_and(|o| o.has_totp),
                redact_params,
                target: r,
            };
            let message = String::new();
            return register(store, login, Some(allowed), None, message).await;
        }
        (AccessDecision::Deny(reason), _) => reason,
        (AccessDecision::Allow, None) => DenyReason::UnknownTarget,
    };
    let message = reason.operator_message(target);
    register(store, login, None, Some(reason), message).await
}

/// A login turned away as busy (the start queue did not move, or the node is at its
/// session limit) before its session was registered: on record as `access_denied` (reason
/// `busy`, with why), written without waiting on the store.
pub fn refused_busy(store: &Store, login: &Login<'_>, busy: &crate::Busy) {
    let mut detail = serde_json::Map::new();
    detail.insert("target".into(), login.target.unwrap_or("").into());
    detail.insert("protocol".into(), login.protocol.as_str().into());
    detail.extend(busy.audit_fields());
    store.audit_later(&AuditEvent {
        kind: "access_denied",
        operator: Some(login.operator),
        session_id: None,
        source: Some(&login.peer.to_string()),
        detail: serde_json::Value::Object(detail),
    });
}

/// Writes the session row and the login's audit events.
async fn register(
    store: &Store,
    login: &Login<'_>,
    allowed: Option<Allowed>,
    reason: Option<DenyReason>,
    message: String,
) -> Result<Admission, StoreError> {
    let target = login.target.unwrap_or("");
    let environment = allowed.as_ref().map(|a| a.target.environment.clone());
    let source = login.peer.to_string();
    let protocol = login.protocol.as_str();
    let mut decision = json!({"target": target, "protocol": protocol});
    let kind = if allowed.is_some() {
        decision["environment"] = json!(environment);
        for (k, v) in &login.start_detail {
            decision[k] = v.clone();
        }
        "session_start"
    } else {
        decision["reason"] = json!(reason.map_or("no target", DenyReason::as_str));
        "access_denied"
    };
    let method = json!({"method": login.method, "target": target, "protocol": protocol});
    // one transaction: no session without its login on record (fail closed), and one
    // commit per login
    let id = store
        .start_session_audited(
            &NewSession {
                node: login.node,
                node_id: login.node_id,
                operator: login.operator,
                target,
                environment: environment.as_deref(),
                protocol: login.protocol,
                client_addr: &source,
            },
            &[("auth_success", method), (kind, decision)],
        )
        .await?;
    match &reason {
        Some(r) => tracing::warn!(reason = r.as_str(), "access denied"),
        None if allowed.is_none() => tracing::warn!(reason = "no target", "access denied"),
        None => tracing::info!("session admitted"),
    }
    Ok(Admission {
        session: Some(SessionIdentity {
            id,
            operator: login.operator.to_owned(),
            target: target.to_owned(),
            environment,
            protocol: login.protocol,
            peer: login.peer,
        }),
        access: match allowed {
            Some(a) => Access::Allowed(Box::new(a)),
            None => Access::Denied { reason, message },
        },
    })
}

/// Where a session's markers go (the recording, once it exists).
pub trait MarkerSink: Send + Sync + 'static {
    fn marker(&self, label: &str);
}

impl<T: MarkerSink + ?Sized> MarkerSink for Arc<T> {
    fn marker(&self, label: &str) {
        (**self).marker(label);
    }
}

/// A session's recording as the end of a session sees it.
pub trait SessionRecording: MarkerSink {
    fn seal(&self) -> impl Future<Output = Option<Result<Sealed, RecordError>>> + Send;
}

impl MarkerSink for RecorderHandle {
    fn marker(&self, label: &str) {
        RecorderHandle::marker(self, label);
    }
}

impl SessionRecording for RecorderHandle {
    fn seal(&self) -> impl Future<Output = Option<Result<Sealed, RecordError>>> + Send {
        RecorderHandle::seal(self)
    }
}

/// The recording at `path` is open and `recorder` writes it: the store registers it and
/// keeps its checkpoints under the node's key (a recording cut short by a crash is then
/// verified up to its last checkpoint), both through the node's recording writer, queued
/// without waiting; the registration is queued before the recorder is told where its
/// checkpoints go, so it is written first.
pub fn recording_opened(
    store: &Store,
    session: &SessionIdentity,
    path: &std::path::Path,
    recorder: &RecorderHandle,
) {
    store.recording_started_later(&session.id, &path.display().to_string());
    let (store, id) = (store.clone(), session.id.clone());
    recorder.on_checkpoint(move |cp| store.checkpoint_later(&id, cp.events, cp.digest));
}

/// The recording could not be created: the session ends `recording_failed`, the failure is
/// audited, and the returned message tells the operator why nothing was run (fail closed).
pub fn recording_failed(
    store: &Store,
    session: &SessionIdentity,
    end: &EndReasonCell,
    error: &RecordError,
) -> String {
    tracing::error!(error = %error, "cannot record session: refusing it");
    crate::metrics::recording_failed(session.protocol.as_str());
    end.set(EndReason::RecordingFailed);
    store.audit_later(&AuditEvent {
        kind: "recording_failed",
        operator: Some(&session.operator),
        session_id: Some(&session.id),
        source: Some(&session.peer.to_string()),
        detail: json!({"error": error.to_string()}),
    });
    let done = match session.protocol {
        Protocol::Postgres => "logged",
        _ => "recorded",
    };
    format!("this session cannot be {done} ({error}); Gatehouse does not open unrecorded sessions")
}

/// Ends a registered session: the end marker and the seal of its recording (a recording
/// that cannot be sealed is marked failed), the row closed with its reason and byte counts,
/// and the `session_end` audit event.
pub async fn end_session(
    store: &Store,
    session: &SessionIdentity,
    reason: &EndReason,
    (bytes_in, bytes_out): (u64, u64),
    recording: Option<&impl SessionRecording>,
) {
    if let Some(rec) = recording {
        rec.marker(&format!("session end: {}", reason.to_stored()));
        let protocol = session.protocol.as_str();
        // its registration first (queued at its start): the seal moves the row on from it
        if let Err(e) = store.recording_written(&session.id).await {
            tracing::error!(error = %e, "cannot register the recording in the store");
        }
        let sealed = match rec.seal().await {
            Some(Ok(s)) => {
                crate::metrics::recording_sealed(protocol, s.size);
                store
                    .recording_sealed(&session.id, s.size, s.events, &s.digest)
                    .await
                    .map(|()| true)
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "recording could not be sealed");
                Ok(false)
            }
            None => Ok(false),
        };
        if !matches!(sealed, Ok(true)) {
            crate::metrics::recording_failed(protocol);
            let _ = store.recording_failed(&session.id).await;
        }
    }
    match store
        .end_session(&session.id, reason, bytes_in, bytes_out)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            // another node closed the row (it declared this node lost) and audited that:
            // the connection that ended here is not a second end of the session
            tracing::warn!(reason = %reason, bytes_in, bytes_out, "session ended here after another node closed it as interrupted");
            return;
        }
        Err(e) => tracing::error!(error = %e, "cannot close session in the registry"),
    }
    let _ = store
        .audit(&AuditEvent {
            kind: "session_end",
            operator: Some(&session.operator),
            session_id: Some(&session.id),
            source: Some(&session.peer.to_string()),
            detail: json!({
                "target": session.target,
                "protocol": session.protocol.as_str(),
                "reason": reason.to_stored(),
                "bytes_in": bytes_in,
                "bytes_out": bytes_out,
            }),
        })
        .await;
    crate::metrics::session_ended(session.protocol.as_str(), reason);
    tracing::info!(reason = %reason, bytes_in, bytes_out, "session ended");
}

/// The guard's observer for every front: the first end reason wins, each directive is a
/// marker in the recording and an audit event (queued, never awaited).
pub struct SessionObserver<M> {
    store: Store,
    session: SessionIdentity,
    end: Arc<EndReasonCell>,
    markers: M,
}

impl<M: MarkerSink> GuardObserver for SessionObserver<M> {
    fn directive(&self, d: &Directive) {
        if let Directive::End { reason, .. } = d {
            self.end.set(reason.clone());
        }
        self.markers.marker(&marker_label(d));
        let s = &self.session;
        audit_directive(&self.store, &s.operator, &s.id, d);
    }
}

/// A front's side of a running guard: the clock it touches on operator activity, the gate
/// every operator action asks, and the guard's event queue.
pub struct Enforcement<C> {
    pub clock: Arc<ActivityClock>,
    pub gate: Arc<SessionGate>,
    pub events: GuardEvents<C>,
    /// The guard's task, for a front that stops it at the session's end.
    pub guard: tokio::task::AbortHandle,
}

/// What a guard is started with, besides the front's operator I/O and reauthentication.
pub struct GuardSetup<'a, M> {
    pub store: &'a Store,
    pub session: &'a SessionIdentity,
    pub policy: &'a StoredPolicy,
    /// When the session opened (the guard's time zero).
    pub opened: tokio::time::Instant,
    pub end: Arc<EndReasonCell>,
    pub markers: M,
    /// The session's entry in the node's live registry: from now on policy changes, kills
    /// and shutdown reach the guard through it.
    pub registration: &'a Registration,
}

/// Starts the session's guard in the current span and connects it to the node's live
/// registry. The guard runs until the session ends or the returned sender and every clone
/// of it are dropped.
pub fn start_guard<C, O, R, M>(setup: GuardSetup<'_, M>, io: O, reauth: R) -> Enforcement<C>
where
    C: Copy + Ord + Send + Sync + 'static,
    O: OperatorIo<C>,
    R: Reauthenticator,
    M: MarkerSink,
{
    let clock = Arc::new(ActivityClock::new(setup.opened));
    let gate = SessionGate::new();
    let (events, rx) = GuardEvents::new();
    let session = setup.session;
    let observer = SessionObserver {
        store: setup.store.clone(),
        session: session.clone(),
        end: setup.end,
        markers: setup.markers,
    };
    let guard = Guard::new(
        setup.policy.policy.clone(),
        clock.clone(),
        io,
        reauth,
        observer,
        gate.clone(),
        session.operator.clone(),
    );
    let status = guard.status();
    // on the node's enforcement thread when it has one (see `enforcement_thread`)
    let task = crate::enforcement_thread::spawn(tracing::Instrument::instrument(
        guard.run(rx),
        tracing::Span::current(),
    ));
    let deliver = events.clone();
    setup.registration.guard(
        &session.id,
        &setup.policy.environment,
        setup.policy.version,
        status,
        move |c| {
            let _ = deliver.send(c.into());
        },
    );
    Enforcement {
        clock,
        gate,
        events,
        guard: task.abort_handle(),
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
