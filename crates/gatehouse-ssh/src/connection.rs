//! One operator connection: authentication, the access decision, the session row, and the
//! dispatch of channel events to relays. `ConnectionState` is shared with the relay tasks and
//! with the task that closes the session row when the connection ends.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gatehouse_core::{
    AccessDecision, AccessFacts, Admission, EndReason, ForwardingKind, ForwardingPolicy, LoginName,
    LoginNameError, OperatorAction, Protocol, RecordingMode, decide_access, env_var_allowed,
};
use gatehouse_store::{AuditEvent, NewSession, StoredPolicy, TargetRecord};
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty, Sig};
use serde_json::json;

use crate::broker::Broker;
use crate::deny::{notice, refuse_on_channel};
use crate::enforce::{AuditObserver, GuardSender, SshOperator};
use crate::keys::fingerprint;
use crate::relay::{self, RelayHandle, Request, Started, ToTarget, WindowSize};
use crate::upstream::{self, Upstream};
use gatehouse_session::{ActivityClock, FailedLogin, Guard, GuardEvent, SessionGate, StoreReauth};

/// What an operator is told when the store could not register the session in time.
pub(crate) const STORE_BUSY: &str = "Gatehouse is too busy to open the session now (its store did not \
                          answer in time); nothing was run. Try again in a moment.";

/// What the connection-closing task needs, shared with relays.
pub(crate) struct ConnectionState {
    peer: SocketAddr,
    span: tracing::Span,
    inner: Mutex<StateInner>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// The session's recording, once its first shell/exec/subsystem started.
    pub(crate) recorder: std::sync::OnceLock<gatehouse_recorder::RecorderHandle>,
    /// Signalled when an ended session could not be disconnected politely (the client
    /// stopped reading and the SSH session is stuck behind it): the socket is dropped.
    pub(crate) sever: Arc<tokio::sync::Notify>,
    /// Operator payload bytes queued for the target and not yet written (all channels):
    /// what the operator's window is throttled on (see `relay`'s module docs).
    pub(crate) to_target_backlog: AtomicUsize,
    /// Signalled when the backlog shrinks or the relays stop (a handler may wait on it).
    backlog_drained: tokio::sync::Notify,
    /// The relays' tasks, stopped when the connection ends whatever they wait on; `None`
    /// once stopped.
    relay_tasks: Mutex<Option<Vec<tokio::task::AbortHandle>>>,
    store: gatehouse_store::Store,
}

#[derive(Default)]
struct StateInner {
    /// Authentication bookkeeping, for counting a key-only failed connection once.
    authenticated: bool,
    keys_rejected: u32,
    failures_recorded: u32,
    last_user: Option<String>,
    session_id: Option<String>,
    operator: Option<String>,
    target: Option<String>,
    end_reason: Option<EndReason>,
    upstream: Option<Arc<Upstream>>,
}

impl ConnectionState {
    pub(crate) fn new(
        peer: SocketAddr,
        span: tracing::Span,
        store: gatehouse_store::Store,
    ) -> Self {
        ConnectionState {
            store,
            peer,
            span,
            inner: Mutex::new(StateInner::default()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            recorder: std::sync::OnceLock::new(),
            sever: Arc::new(tokio::sync::Notify::new()),
            to_target_backlog: AtomicUsize::new(0),
            backlog_drained: tokio::sync::Notify::new(),
            relay_tasks: Mutex::new(Some(Vec::new())),
        }
    }

    /// Takes charge of a relay's tasks: [`ConnectionState::finish`] stops them (at once,
    /// if the connection has ended already).
    pub(crate) fn own_relay_tasks(&self, tasks: [tokio::task::AbortHandle; 2]) {
        if let Ok(mut t) = self.relay_tasks.lock()
            && let Some(owned) = t.as_mut()
        {
            owned.extend(tasks);
            return;
        }
        tasks.iter().for_each(tokio::task::AbortHandle::abort);
    }

    /// Stops every relay task: a relay waiting on a peer that stopped reading would
    /// otherwise hold the target connection (and russh's session loops) open for ever.
    fn stop_relays(&self) {
        let tasks = self
            .relay_tasks
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        self.backlog_drained.notify_waiters();
    }

    fn relays_stopped(&self) -> bool {
        self.relay_tasks.lock().map(|t| t.is_none()).unwrap_or(true)
    }

    /// `len` queued operator bytes were written to the target (or dropped).
    pub(crate) fn backlog_done(&self, len: usize) {
        let before = self.to_target_backlog.fetch_sub(len, Ordering::Relaxed);
        // only a handler over the hard limit waits: wake it when the backlog crosses back
        if before > relay::BACKLOG_HARD && before - len <= relay::BACKLOG_HARD {
            self.backlog_drained.notify_waiters();
        }
    }

    /// Waits while the operator is more than `BACKLOG_HARD` ahead of the target (see
    /// `relay`'s module docs); returns at once when the relays have stopped.
    async fn backlog_room(&self) {
        loop {
            let drained = self.backlog_drained.notified();
            if self.to_target_backlog.load(Ordering::Relaxed) <= relay::BACKLOG_HARD
                || self.relays_stopped()
            {
                return;
            }
            drained.await;
        }
    }

    /// Whether the operator completed authentication on this connection.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.inner.lock().map(|i| i.authenticated).unwrap_or(false)
    }

    /// Records why the session ends; the first reason given wins.
    pub(crate) fn set_end_reason(&self, reason: EndReason) {
        if let Ok(mut i) = self.inner.lock()
            && i.end_reason.is_none()
        {
            i.end_reason = Some(reason);
        }
    }

    /// Logs file transfers seen on an SFTP channel: recording markers and audit events.
    pub(crate) fn log_transfers(&self, transfers: Vec<gatehouse_recorder::sftp::Transfer>) {
        if transfers.is_empty() {
            return;
        }
        let (session_id, operator) = match self.inner.lock() {
            Ok(i) => (i.session_id.clone(), i.operator.clone()),
            Err(_) => return,
        };
        let lines: Vec<String> = transfers.iter().map(ToString::to_string).collect();
        if let Some(rec) = self.recorder.get() {
            for l in &lines {
                rec.marker(l.clone());
            }
        }
        // one task for the batch, so the rows keep the order of the operations
        let store = self.store.clone();
        tokio::spawn(async move {
            for l in lines {
                let _ = store
                    .audit(&AuditEvent {
                        kind: "file_transfer",
                        operator: operator.as_deref(),
                        session_id: session_id.as_deref(),
                        source: None,
                        detail: json!({"transfer": l}),
                    })
                    .await;
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut StateInner)) {
        if let Ok(mut i) = self.inner.lock() {
            f(&mut i);
        }
    }

    /// Called once the operator connection is gone: closes the target connection and the
    /// session row.
    pub(crate) async fn finish(&self, broker: &Broker) {
        // A client that only offered keys nobody authorized failed to log in: count the
        // connection once (each offered key is not a guess; an agent may hold many).
        let key_only_failure = self.inner.lock().ok().and_then(|i| {
            (!i.authenticated && i.keys_rejected > 0 && i.failures_recorded == 0)
                .then(|| i.last_user.clone().unwrap_or_default())
        });
        if let Some(user) = key_only_failure {
            record_auth_failure(broker, self.peer, &user, "publickey").await;
        }
        let (session_id, operator, target, reason, upstream) = match self.inner.lock() {
            Ok(mut i) => (
                i.session_id.take(),
                i.operator.clone(),
                i.target.clone(),
                i.end_reason.take().unwrap_or(EndReason::ClientClosed),
                i.upstream.take(),
            ),
            Err(_) => return,
        };
        self.stop_relays();
        if let Some(up) = upstream {
            up.disconnect().await;
        }
        let Some(id) = session_id else { return };
        broker.live.unregister(&id);
        let (bytes_in, bytes_out) = (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        let store = broker.store();
        if let Some(rec) = self.recorder.get() {
            rec.marker(format!("session end: {}", reason.to_stored()));
            let sealed = match rec.seal().await {
                Some(Ok(s)) => store
                    .recording_sealed(&id, s.size, s.events, &s.digest)
                    .await
                    .map(|()| true),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "recording could not be sealed");
                    Ok(false)
                }
                None => Ok(false),
            };
            if !matches!(sealed, Ok(true)) {
                let _ = store.recording_failed(&id).await;
            }
        }
        if let Err(e) = store.end_session(&id, &reason, bytes_in, bytes_out).await {
            tracing::error!(error = %e, "cannot close session in the registry");
        }
        let _ = store
            .audit(&AuditEvent {
                kind: "session_end",
                operator: operator.as_deref(),
                session_id: Some(&id),
                source: Some(&self.peer.to_string()),
                detail: json!({
                    "target": target,
                    "reason": reason.to_stored(),
                    "bytes_in": bytes_in,
                    "bytes_out": bytes_out,
                }),
            })
            .await;
        tracing::info!(reason = %reason, bytes_in, bytes_out, "session ended");
    }
}

/// Logs, audits and counts toward the source's lockout one failed login.
async fn record_auth_failure(broker: &Broker, peer: SocketAddr, user: &str, method: &str) {
    let operator = split_user(user).map(|(o, _)| o);
    let failure = FailedLogin {
        peer,
        user,
        operator: operator.as_deref(),
        method,
        protocol: "ssh",
        // a key nobody authorized is not a guess at a secret
        guessed_secret: method == "password",
    };
    broker
        .config
        .front
        .login
        .failed(broker.store(), failure)
        .await;
}

/// Whether the authenticated operator may reach the selected target.
enum Access {
    /// Not authenticated yet.
    Pending,
    Allowed(Box<TargetRecord>),
    Denied(String),
}

enum ChannelKind {
    Relay(RelayHandle),
    /// Refused with this message at the first shell/exec/subsystem request.
    Refused(String),
}

/// The russh handler for one operator connection.
pub(crate) struct Connection {
    broker: Arc<Broker>,
    state: Arc<ConnectionState>,
    operator: Option<String>,
    target_name: Option<String>,
    session_id: Option<String>,
    access: Access,
    upstream: Option<Arc<Upstream>>,
    channels: HashMap<ChannelId, ChannelKind>,
    pty_channels: HashSet<ChannelId>,
    /// TERM and size of each channel's pty, for the recording header.
    pty_info: HashMap<ChannelId, (String, u32, u32)>,
    /// The environment's policy, read at login; the guard starts with it.
    policy: Option<(StoredPolicy, bool, bool)>,
    /// Subsystems besides sftp the environment allows, read at login.
    subsystems: Vec<String>,
    enforcement: Option<Enforcement>,
}

/// The handler's side of a running guard.
struct Enforcement {
    clock: Arc<ActivityClock>,
    /// The session gate every operator action on a relayed channel passes.
    gate: Arc<SessionGate>,
    events: GuardSender,
}

/// Splits the SSH user name into operator and (optional) target.
fn split_user(user: &str) -> Option<(String, Option<String>)> {
    match LoginName::parse(user) {
        Ok(l) => Some((l.operator, Some(l.target))),
        Err(LoginNameError::MissingTarget(_)) => gatehouse_core::validate_name("operator", user)
            .ok()
            .map(|()| (user.to_owned(), None)),
        Err(_) => None,
    }
}

impl Connection {
    pub(crate) fn new(broker: Arc<Broker>, state: Arc<ConnectionState>) -> Self {
        Connection {
            broker,
            state,
            operator: None,
            target_name: None,
            session_id: None,
            access: Access::Pending,
            upstream: None,
            channels: HashMap::new(),
            pty_channels: HashSet::new(),
            pty_info: HashMap::new(),
            policy: None,
            subsystems: Vec::new(),
            enforcement: None,
        }
    }

    /// Starts the session's guard (allowed sessions only), once authentication completed.
    fn start_guard(&mut self, session: &mut Session) {
        let (Some((policy, has_password, has_totp)), Some(session_id), Some(operator)) = (
            self.policy.take(),
            self.session_id.clone(),
            self.operator.clone(),
        ) else {
            return;
        };
        let clock = Arc::new(ActivityClock::new(tokio::time::Instant::now()));
        let gate = SessionGate::new();
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let store = self.broker.store().clone();
        let guard = Guard::new(
            policy.policy,
            clock.clone(),
            SshOperator {
                handle: session.handle(),
                sever: self.state.sever.clone(),
            },
            StoreReauth {
                store: store.clone(),
                operator: operator.clone(),
                has_password,
                has_totp,
                login: self.broker.config.front.login.clone(),
                peer: self.state.peer,
            },
            AuditObserver {
                store,
                state: self.state.clone(),
                session_id: session_id.clone(),
                operator: operator.clone(),
            },
            gate.clone(),
            operator,
        );
        let status = guard.status();
        tokio::spawn(tracing::Instrument::instrument(
            guard.run(rx),
            self.state.span.clone(),
        ));
        let deliver = events.clone();
        self.broker
            .live
            .register(&session_id, &policy.environment, policy.version, move |c| {
                let _ = deliver.send(c.into());
            });
        self.broker.live.attach_status(&session_id, status);
        self.enforcement = Some(Enforcement {
            clock,
            gate,
            events,
        });
    }

    /// Opens the session's recording if it is not open yet. Fail closed: `Err` carries the
    /// message the operator sees, and the session must not go on.
    fn ensure_recording(&mut self, channel: ChannelId, what: &str) -> Result<(), String> {
        if self.state.recorder.get().is_some() {
            return Ok(());
        }
        let (Some(e), Some(session_id)) = (&self.enforcement, &self.session_id) else {
            return Err("the session is not set up for recording".into());
        };
        let pty = if self.pty_channels.contains(&channel) {
            "yes"
        } else {
            "no"
        };
        let (term, cols, rows) =
            self.pty_info
                .get(&channel)
                .cloned()
                .map_or((None, 80, 24), |(t, c, r)| {
                    let (c, r) = gatehouse_recorder::effective_size(c, r);
                    (Some(t), c, r)
                });
        let operator = self.operator.clone().unwrap_or_default();
        let target = self.target_name.clone().unwrap_or_default();
        let environment = match &self.access {
            Access::Allowed(t) => t.environment.clone(),
            _ => String::new(),
        };
        let started = std::time::SystemTime::now()
            .checked_sub(e.clock.opened().elapsed())
            .unwrap_or_else(std::time::SystemTime::now);
        let header = gatehouse_recorder::Header {
            width: cols,
            height: rows,
            timestamp: started
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            term,
            title: format!("{operator} → {target}"),
            env: vec![
                ("GATEHOUSE_SESSION".into(), session_id.clone()),
                ("GATEHOUSE_OPERATOR".into(), operator),
                ("GATEHOUSE_TARGET".into(), target),
                ("GATEHOUSE_ENVIRONMENT".into(), environment),
                ("GATEHOUSE_FIRST_CHANNEL".into(), what.to_owned()),
                (gatehouse_recorder::PTY_KEY.into(), pty.into()),
            ],
        };
        let file = gatehouse_recorder::file::RecordingFile::create(
            &self.broker.config.front.recordings_root,
            session_id,
            started,
            &header,
        );
        let file = match file {
            Ok(f) => f,
            Err(err) => {
                tracing::error!(error = %err, "cannot record session: refusing it");
                self.state.set_end_reason(EndReason::RecordingFailed);
                self.broker.store().audit_later(&AuditEvent {
                    kind: "recording_failed",
                    operator: self.operator.as_deref(),
                    session_id: Some(session_id),
                    source: None,
                    detail: json!({"error": err.to_string()}),
                });
                return Err(format!(
                    "this session cannot be recorded ({err}); Gatehouse does not open unrecorded sessions"
                ));
            }
        };
        let path = file.path().display().to_string();
        let events = e.events.clone();
        let recorder = gatehouse_recorder::spawn_recorder(file, e.clock.opened(), move |_why| {
            let _ = events.send(GuardEvent::Kill(EndReason::RecordingFailed));
        });
        let store = self.broker.store().clone();
        let id = session_id.clone();
        let checkpoints = recorder.checkpoints();
        tokio::spawn(async move {
            if let Err(err) = store.recording_started(&id, &path).await {
                tracing::error!(error = %err, "cannot register the recording in the store");
            }
            gatehouse_session::store_checkpoints(store, id, checkpoints).await;
        });
        let _ = self.state.recorder.set(recorder);
        Ok(())
    }

    fn tell_guard(&self, event: GuardEvent<ChannelId>) {
        if let Some(e) = &self.enforcement {
            let _ = e.events.send(event);
        }
    }

    fn touch(&self) {
        if let Some(e) = &self.enforcement {
            e.clock.touch();
        }
    }

    fn peer(&self) -> String {
        self.state.peer.to_string()
    }

    /// `Err(reject)` while the login gate refuses the source (or, with `account`, that
    /// account's password logins).
    fn check_rate_limit(&self, account: Option<&str>) -> Result<(), Auth> {
        (self.broker.config.front.login)
            .check(self.state.peer, account)
            .map_err(|_| Auth::reject())
    }

    async fn auth_failed(&self, user: &str, method: &str) -> Auth {
        self.state.update(|i| i.failures_recorded += 1);
        record_auth_failure(&self.broker, self.state.peer, user, method).await;
        Auth::reject()
    }

    /// Authentication succeeded: decide access and register the session.
    async fn auth_succeeded_as(
        &mut self,
        operator: String,
        target: Option<String>,
        method: &str,
    ) -> Auth {
        (self.broker.config.front.login).succeeded(self.state.peer.ip(), &operator);
        self.state.update(|i| i.authenticated = true);
        match self.register(&operator, target.as_deref(), method).await {
            Ok(()) => Auth::Accept,
            // Busy or down, not wrong: let the client in far enough to read why (its
            // channels are refused with the message; nothing reaches a target).
            Err(e) if e.is_unavailable() => {
                tracing::error!(error = %e, "store unavailable during login; session refused");
                self.state
                    .set_end_reason(EndReason::Error(format!("store unavailable: {e}")));
                self.access = Access::Denied(STORE_BUSY.to_owned());
                Auth::Accept
            }
            Err(e) => {
                tracing::error!(error = %e, "store failed during login; refusing");
                Auth::reject()
            }
        }
    }

    async fn register(
        &mut self,
        operator: &str,
        target: Option<&str>,
        method: &str,
    ) -> Result<(), gatehouse_store::StoreError> {
        let store = self.broker.store().clone();
        let record = match target {
            Some(t) => store.target(t).await?,
            None => None,
        };
        let account = store.operator(operator).await?;
        let locked = account.as_ref().is_some_and(|o| o.locked);
        let grants = store.granted_environments(operator).await?;
        let (access, denial) = match target {
            None => (
                Access::Denied(format!(
                    "no target selected: connect as {operator}+TARGET@…"
                )),
                Some("no target"),
            ),
            Some(t) => {
                let facts = AccessFacts {
                    operator_locked: locked,
                    target: record
                        .as_ref()
                        .map(|r| (r.environment.as_str(), r.protocol)),
                    granted_environments: &grants,
                    protocol: Protocol::Ssh,
                };
                match (decide_access(&facts), record) {
                    (AccessDecision::Allow, Some(r)) => (Access::Allowed(Box::new(r)), None),
                    (AccessDecision::Deny(reason), _) => (
                        Access::Denied(reason.operator_message(t)),
                        Some(reason.as_str()),
                    ),
                    (AccessDecision::Allow, None) => (
                        Access::Denied(format!("target '{t}' vanished")),
                        Some("unknown target"),
                    ),
                }
            }
        };
        let environment = match &access {
            Access::Allowed(r) => Some(r.environment.clone()),
            _ => None,
        };
        if let Some(env) = &environment {
            let policy = store.environment_policy(env).await?;
            let has_password = account.is_some_and(|o| o.password_hash.is_some());
            let has_totp = store.has_totp(operator).await?;
            self.policy = Some((policy, has_password, has_totp));
            self.subsystems = store.allowed_subsystems(env).await?;
        }
        let target_name = target.unwrap_or("");
        let session_id = store
            .start_session(&NewSession {
                node: &self.broker.config.front.node,
                operator,
                target: target_name,
                environment: environment.as_deref(),
                protocol: Protocol::Ssh,
                client_addr: &self.peer(),
            })
            .await?;
        let span = &self.state.span;
        span.record("session_id", session_id.as_str());
        span.record("operator", operator);
        span.record("target", target_name);
        if let Some(env) = &environment {
            span.record("environment", env.as_str());
        }
        if let Ok(mut i) = self.state.inner.lock() {
            i.session_id = Some(session_id.clone());
            i.operator = Some(operator.to_owned());
            i.target = target.map(str::to_owned);
        }
        store
            .audit(&AuditEvent {
                kind: "auth_success",
                operator: Some(operator),
                session_id: Some(&session_id),
                source: Some(&self.peer()),
                detail: json!({"method": method, "target": target_name}),
            })
            .await?;
        store
            .audit(&AuditEvent {
                kind: if denial.is_some() {
                    "access_denied"
                } else {
                    "session_start"
                },
                operator: Some(operator),
                session_id: Some(&session_id),
                source: Some(&self.peer()),
                detail: json!({
                    "target": target_name,
                    "environment": environment,
                    "reason": denial,
                }),
            })
            .await?;
        if let Some(why) = denial {
            tracing::warn!(reason = why, "access denied");
            self.state.set_end_reason(EndReason::AccessDenied);
        } else {
            tracing::info!("session started");
        }
        self.operator = Some(operator.to_owned());
        self.target_name = target.map(str::to_owned);
        self.session_id = Some(session_id);
        self.access = access;
        Ok(())
    }

    /// The target connection, opened on first use.
    async fn upstream(&mut self) -> Result<Arc<Upstream>, String> {
        if let Some(up) = &self.upstream {
            return Ok(up.clone());
        }
        let target = match &self.access {
            Access::Allowed(t) => t.clone(),
            Access::Denied(m) => return Err(m.clone()),
            Access::Pending => return Err("not authenticated".into()),
        };
        let session_id = self.session_id.clone().unwrap_or_default();
        let operator = self.operator.clone().unwrap_or_default();
        match upstream::connect(&self.broker, &target, &session_id, &operator).await {
            Ok(up) => {
                let up = Arc::new(up);
                if let Ok(mut i) = self.state.inner.lock() {
                    i.upstream = Some(up.clone());
                }
                self.upstream = Some(up.clone());
                Ok(up)
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot connect to target");
                self.state.set_end_reason(e.end_reason());
                let message = e.operator_message(&target.name);
                self.access = Access::Denied(message.clone());
                Err(message)
            }
        }
    }

    fn relay(&self, channel: ChannelId) -> Option<&RelayHandle> {
        match self.channels.get(&channel) {
            Some(ChannelKind::Relay(r)) => Some(r),
            _ => None,
        }
    }

    /// Runs a start request (shell, exec, subsystem) or refuses the channel. The gate must
    /// let it through and the channel must not have started yet (one program per channel);
    /// the recording exists before the request reaches the target (fail closed), and the
    /// channel's recording mode is fixed when the target accepts.
    async fn start_request(
        &mut self,
        channel: ChannelId,
        request: Request,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let relay = match self.channels.get(&channel) {
            Some(ChannelKind::Refused(message)) => {
                let message = message.clone();
                return refuse_on_channel(session, channel, &message);
            }
            Some(ChannelKind::Relay(relay)) => relay,
            None => return session.channel_failure(channel),
        };
        let verdict = relay.admit(OperatorAction::Start);
        if verdict != Admission::Forward {
            self.refused_action(OperatorAction::Start, verdict);
            return session.channel_failure(channel);
        }
        let (what, mode) = match &request {
            Request::Shell => ("shell".to_owned(), RecordingMode::Terminal),
            Request::Exec(c) => (
                format!("exec: {}", String::from_utf8_lossy(c)),
                RecordingMode::Terminal,
            ),
            Request::Subsystem(n) => (format!("subsystem: {n}"), RecordingMode::for_subsystem(n)),
            Request::Pty { .. } => return session.channel_failure(channel),
        };
        if mode == RecordingMode::RawSubsystem && !self.subsystem_allowed(&request) {
            self.refuse_subsystem(&what);
            return session.channel_failure(channel);
        }
        if let Err(message) = self.ensure_recording(channel, &what) {
            return refuse_on_channel(session, channel, &message);
        }
        let Some(ChannelKind::Relay(relay)) = self.channels.get(&channel) else {
            return session.channel_failure(channel);
        };
        if let Some(rec) = self.state.recorder.get() {
            rec.marker(format!("channel: {what}"));
            rec.channel_started(channel.into(), self.pty_channels.contains(&channel));
        }
        match relay.start(request, mode).await {
            Started::Answered(true) => {
                self.tell_guard(GuardEvent::ChannelStarted {
                    channel,
                    pty: self.pty_channels.contains(&channel),
                });
                session.channel_success(channel)
            }
            Started::Answered(false) => {
                if let Some(rec) = self.state.recorder.get() {
                    rec.marker(format!("target refused: {what}"));
                }
                session.channel_failure(channel)
            }
            Started::Refused(verdict) => {
                self.refused_action(OperatorAction::Start, verdict);
                session.channel_failure(channel)
            }
        }
    }

    /// Subsystems other than sftp carry protocols Gatehouse cannot show a reviewer as a
    /// terminal or a transfer log; none is allowed unless the environment names it (then
    /// its bytes are recorded raw).
    fn subsystem_allowed(&self, request: &Request) -> bool {
        matches!(request, Request::Subsystem(name) if self.subsystems.iter().any(|s| s == name))
    }

    /// Audits a refused subsystem.
    fn refuse_subsystem(&self, what: &str) {
        tracing::warn!(request = %what.escape_debug(), "subsystem refused by policy");
        self.broker.store().audit_later(&AuditEvent {
            kind: "subsystem_refused",
            operator: self.operator.as_deref(),
            session_id: self.session_id.as_deref(),
            source: Some(&self.peer()),
            detail: json!({"request": what}),
        });
    }

    /// Refuses a forwarding request, audits it and tells the operator on a live channel.
    async fn refuse_forwarding(
        &self,
        kind: ForwardingKind,
        detail: serde_json::Value,
        session: &mut Session,
    ) {
        let message = ForwardingPolicy::refusal_message(kind);
        tracing::warn!(kind = kind.as_str(), %detail, "forwarding refused");
        let _ = self
            .broker
            .store()
            .audit(&AuditEvent {
                kind: "forwarding_refused",
                operator: self.operator.as_deref(),
                session_id: self.session_id.as_deref(),
                source: Some(&self.peer()),
                detail: json!({"kind": kind.as_str(), "request": detail}),
            })
            .await;
        if let Some(channel) = self
            .channels
            .iter()
            .find_map(|(id, k)| matches!(k, ChannelKind::Relay(_)).then_some(*id))
        {
            let _ = notice(session, channel, &message);
        }
    }

    /// Bytes the operator sent on a channel: activity, counted, recorded, relayed — if the
    /// gate lets them through. While the session is locked, keystrokes on a terminal answer
    /// the lock prompt instead and go nowhere else; input on a channel whose program the
    /// target has not accepted is dropped (it would reach the program unrecorded).
    async fn operator_input(&self, channel: ChannelId, event: ToTarget, len: usize) {
        let Some(relay) = self.relay(channel) else {
            return;
        };
        match relay.admit(OperatorAction::Input) {
            Admission::Forward => {}
            Admission::LockPrompt => {
                if let (Some(e), ToTarget::Data(bytes), true) = (
                    &self.enforcement,
                    event,
                    self.pty_channels.contains(&channel),
                ) {
                    let _ = e.events.send(GuardEvent::LockInput(bytes));
                }
                return;
            }
            verdict => {
                tracing::debug!(?verdict, len, "operator input not relayed");
                return;
            }
        }
        self.touch();
        if let ToTarget::Data(bytes) = &event {
            relay.record_input(&self.state, bytes);
        }
        self.state.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        relay.forward(event);
        self.state.backlog_room().await;
    }

    /// Tells the recording that the gate refused an operator action that changes what
    /// runs on the target (a channel open or a start request while locked or ending).
    fn refused_action(&self, action: OperatorAction, verdict: Admission) {
        tracing::warn!(
            action = action.as_str(),
            ?verdict,
            "operator action refused"
        );
        if let (Some(rec), Admission::Refuse(why)) = (self.state.recorder.get(), verdict) {
            rec.marker(format!("refused {}: {}", action.as_str(), why.as_str()));
        }
    }
}

impl Handler for Connection {
    type Error = russh::Error;

    /// Called each time russh has just granted the operator more window: the next grant's
    /// size. While the operator is ahead of the target by more than `BACKLOG_HIGH`, the
    /// grants shrink to a trickle (see `relay`'s module docs).
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        if self.state.to_target_backlog.load(Ordering::Relaxed) > relay::BACKLOG_HIGH {
            relay::THROTTLED_WINDOW
        } else {
            crate::broker::OPERATOR_WINDOW
        }
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.start_guard(session);
        Ok(())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if let Err(reject) = self.check_rate_limit(None) {
            return Ok(reject);
        }
        let Some((operator, _)) = split_user(user) else {
            return Ok(Auth::reject());
        };
        let known = self
            .broker
            .store()
            .operator_has_key(&operator, &fingerprint(offer.public_key))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "store unavailable during login");
                false
            });
        if !known {
            let user = user.to_owned();
            self.state.update(|i| {
                i.keys_rejected += 1;
                i.last_user = Some(user);
            });
        }
        Ok(if known { Auth::Accept } else { Auth::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if let Err(reject) = self.check_rate_limit(None) {
            return Ok(reject);
        }
        let parsed = split_user(user);
        let known = match &parsed {
            Some((operator, _)) => self
                .broker
                .store()
                .operator_has_key(operator, &fingerprint(key.public_key))
                .await
                .unwrap_or(false),
            None => false,
        };
        match parsed {
            Some((operator, target)) if known => {
                Ok(self.auth_succeeded_as(operator, target, "publickey").await)
            }
            _ => Ok(self.auth_failed(user, "publickey").await),
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let parsed = split_user(user);
        if let Err(reject) = self.check_rate_limit(parsed.as_ref().map(|(o, _)| o.as_str())) {
            return Ok(reject);
        }
        let stored = match &parsed {
            Some((operator, _)) => match self.broker.store().operator(operator).await {
                Ok(o) => o.and_then(|o| o.password_hash),
                Err(e) => {
                    tracing::error!(error = %e, "store unavailable during login");
                    return Ok(Auth::reject());
                }
            },
            None => None,
        };
        let ok = (self.broker.config.front.login)
            .verify_password(password.to_owned(), stored)
            .await;
        match parsed {
            Some((operator, target)) if ok => {
                Ok(self.auth_succeeded_as(operator, target, "password").await)
            }
            _ => Ok(self.auth_failed(user, "password").await),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let id = channel.id();
        // Events reach us through the handler callbacks; the channel's own queue is unused.
        drop(channel);
        // A new channel while locked or ending (e.g. through an OpenSSH ControlMaster) would
        // run a program the lock is meant to stop: refuse it before it reaches the target.
        if let Some(e) = &self.enforcement {
            let verdict = e.gate.admit(None, OperatorAction::OpenChannel);
            if verdict != Admission::Forward {
                self.refused_action(OperatorAction::OpenChannel, verdict);
                reply
                    .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                    .await;
                return Ok(());
            }
        }
        self.touch();
        let gate = self.enforcement.as_ref().map(|e| e.gate.clone());
        let kind = match (self.upstream().await, gate) {
            (Err(message), _) => ChannelKind::Refused(message),
            (Ok(_), None) => ChannelKind::Refused("the session is not guarded".into()),
            (Ok(up), Some(gate)) => match up.open_session_channel().await {
                Ok(target_channel) => ChannelKind::Relay(relay::start(
                    target_channel,
                    id,
                    session.handle(),
                    self.state.clone(),
                    gate,
                )),
                Err(e) => {
                    let target = self.target_name.clone().unwrap_or_default();
                    self.state.set_end_reason(EndReason::TargetUnreachable);
                    ChannelKind::Refused(format!(
                        "target '{target}' refused a session channel: {e}"
                    ))
                }
            },
        };
        self.channels.insert(id, kind);
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        drop(channel);
        // Forwarding is refused: Gatehouse records terminals and transfers, and a tunnel
        // would carry traffic it cannot show a reviewer.
        self.refuse_forwarding(
            ForwardingKind::LocalPort,
            json!({"host": host_to_connect, "port": port_to_connect,
                   "originator": format!("{originator_address}:{originator_port}")}),
            session,
        )
        .await;
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        drop(channel);
        self.refuse_forwarding(
            ForwardingKind::LocalPort,
            json!({"socket": socket_path}),
            session,
        )
        .await;
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_forwarding(
            ForwardingKind::RemotePort,
            json!({"address": address, "port": *port}),
            session,
        )
        .await;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_forwarding(
            ForwardingKind::RemotePort,
            json!({"socket": socket_path}),
            session,
        )
        .await;
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_forwarding(
            ForwardingKind::Agent,
            json!({"channel": channel.to_string()}),
            session,
        )
        .await;
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_forwarding(
            ForwardingKind::X11,
            json!({"channel": channel.to_string()}),
            session,
        )
        .await;
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let ok = match self.relay(channel) {
            Some(relay) => {
                relay
                    .prepare(Request::Pty {
                        term: term.to_owned(),
                        cols: col_width,
                        rows: row_height,
                        pix_width,
                        pix_height,
                        modes: modes.to_vec(),
                    })
                    .await
            }
            // A refused channel accepts the pty so that the refusal text reaches the operator.
            None => self.channels.contains_key(&channel),
        };
        if ok {
            self.pty_channels.insert(channel);
            self.pty_info
                .insert(channel, (term.to_owned(), col_width, row_height));
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !env_var_allowed(variable_name) {
            tracing::debug!(variable = %variable_name.escape_debug(), "environment variable not relayed");
            return session.channel_failure(channel);
        }
        let verdict = match self.relay(channel) {
            Some(relay) => relay.forward(ToTarget::Env(
                variable_name.to_owned(),
                variable_value.to_owned(),
            )),
            None => Admission::Forward,
        };
        if verdict == Admission::Forward {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, Request::Shell, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, Request::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, Request::Subsystem(name.to_owned()), session)
            .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let (Some(rec), true) = (
            self.state.recorder.get(),
            self.pty_channels.contains(&channel),
        ) {
            rec.resize(col_width, row_height);
        }
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::WindowChange(WindowSize {
                cols: col_width,
                rows: row_height,
                pix_width,
                pix_height,
            }));
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::Signal(signal));
        }
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let event = ToTarget::Data(Bytes::copy_from_slice(data));
        self.operator_input(channel, event, data.len()).await;
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let event = ToTarget::ExtendedData(code, Bytes::copy_from_slice(data));
        self.operator_input(channel, event, data.len()).await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::Eof);
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.pty_channels.remove(&channel);
        self.tell_guard(GuardEvent::ChannelClosed { channel });
        if let Some(ChannelKind::Relay(relay)) = self.channels.remove(&channel) {
            self.state.set_end_reason(EndReason::ClientClosed);
            relay.forward(ToTarget::Close);
        }
        Ok(())
    }
}
