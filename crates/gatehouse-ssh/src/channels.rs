//! Channels on the SSH front: each session channel is relayed to a channel of the target
//! (or refused with a message shown at its first request); start requests pass the session
//! gate, open the recording first and fix the channel's recording mode; operator input is
//! activity, recorded and relayed only if the gate lets it through.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use gatehouse_core::{Admission, EndReason, OperatorAction, RecordingMode, env_var_allowed};
use gatehouse_session::GuardEvent;
use gatehouse_store::AuditEvent;
use russh::server::{ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, Pty, Sig};
use serde_json::json;

use crate::connection::{Connection, Target};
use crate::deny::refuse_on_channel;
use crate::relay::{self, RelayHandle, Request, Started, ToTarget, WindowSize};
use crate::upstream::{self, Upstream};

pub(crate) enum ChannelKind {
    Relay(RelayHandle),
    /// Refused with this message at the first shell/exec/subsystem request.
    Refused(String),
}

/// A pty request's fields, as russh hands them over.
pub(crate) struct PtyRequest<'a> {
    pub(crate) term: &'a str,
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    pub(crate) pix_width: u32,
    pub(crate) pix_height: u32,
    pub(crate) modes: &'a [(Pty, u32)],
}

impl Connection {
    /// The target connection, opened on first use.
    pub(crate) async fn upstream(&mut self) -> Result<Arc<Upstream>, String> {
        if let Some(up) = &self.upstream {
            return Ok(up.clone());
        }
        let target = match &self.target {
            Target::Allowed(a) => a.target.clone(),
            Target::Denied(m) => return Err(m.clone()),
            Target::Pending => return Err("not authenticated".into()),
        };
        let (session_id, operator) = match &self.session {
            Some(s) => (s.id.clone(), s.operator.clone()),
            None => return Err("not authenticated".into()),
        };
        // the target's login waits in the node's start queue (see gatehouse_session::StartQueue);
        // its own timeout counts from when it starts
        let starting = match self.broker.config.front.starting.enter().await {
            Ok(slot) => slot,
            Err(busy) => return Err(self.busy_refused(&busy.into())),
        };
        let connected = upstream::connect(&self.broker, &target, &session_id, &operator).await;
        drop(starting);
        match connected {
            Ok(up) => {
                let up = Arc::new(up);
                let shared = up.clone();
                self.state.update(|i| i.upstream = Some(shared));
                self.upstream = Some(up.clone());
                Ok(up)
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot connect to target");
                self.state.set_end_reason(e.end_reason());
                let message = e.operator_message(&target.name);
                self.target = Target::Denied(message.clone());
                Err(message)
            }
        }
    }

    pub(crate) fn relay(&self, channel: ChannelId) -> Option<&RelayHandle> {
        match self.channels.get(&channel) {
            Some(ChannelKind::Relay(r)) => Some(r),
            _ => None,
        }
    }

    /// Runs a start request (shell, exec, subsystem) or refuses the channel. The gate must
    /// let it through and the channel must not have started yet (one program per channel);
    /// the recording exists before the request reaches the target (fail closed), and the
    /// channel's recording mode is fixed when the target accepts.
    pub(crate) async fn start_request(
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
            // The guard is ending the session: its disconnect (within `POLITE_END`, or the
            // socket is dropped) is the answer, and it carries the reason. A failure
            // reply now would let the client exit first, never learning why.
            if self
                .enforcement
                .as_ref()
                .and_then(|e| e.gate.end_message())
                .is_some()
            {
                return Ok(());
            }
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
        if let Err(message) = self.ensure_recording(channel, &what).await {
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
            operator: self.session.as_ref().map(|s| s.operator.as_str()),
            session_id: self.session.as_ref().map(|s| s.id.as_str()),
            source: Some(&self.peer()),
            detail: json!({"request": what}),
        });
    }

    /// Bytes the operator sent on a channel: activity, counted, recorded, relayed — if the
    /// gate lets them through. While the session is locked, keystrokes on a terminal answer
    /// the lock prompt instead and go nowhere else; input on a channel whose program the
    /// target has not accepted is dropped (it would reach the program unrecorded).
    pub(crate) async fn operator_input(&self, channel: ChannelId, event: ToTarget, len: usize) {
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
    pub(crate) fn refused_action(&self, action: OperatorAction, verdict: Admission) {
        tracing::warn!(
            action = action.as_str(),
            ?verdict,
            "operator action refused"
        );
        if let (Some(rec), Admission::Refuse(why)) = (self.state.recorder.get(), verdict) {
            rec.marker(format!("refused {}: {}", action.as_str(), why.as_str()));
        }
    }

    pub(crate) async fn open_session_channel(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
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
                    let target = self.session.as_ref().map(|s| s.target.clone());
                    let target = target.unwrap_or_default();
                    self.state.set_end_reason(EndReason::TargetUnreachable);
                    ChannelKind::Refused(format!(
                        "target '{target}' refused a session channel: {e}"
                    ))
                }
            },
        };
        self.channels.insert(id, kind);
        self.state.open_channels.send_replace(self.channels.len());
        reply.accept().await;
        Ok(())
    }

    pub(crate) async fn pty(
        &mut self,
        channel: ChannelId,
        p: PtyRequest<'_>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let ok = match self.relay(channel) {
            Some(relay) => {
                relay
                    .prepare(Request::Pty {
                        term: p.term.to_owned(),
                        cols: p.cols,
                        rows: p.rows,
                        pix_width: p.pix_width,
                        pix_height: p.pix_height,
                        modes: p.modes.to_vec(),
                    })
                    .await
            }
            // A refused channel accepts the pty so that the refusal text reaches the operator.
            None => self.channels.contains_key(&channel),
        };
        if ok {
            self.pty_channels.insert(channel);
            self.pty_info
                .insert(channel, (p.term.to_owned(), p.cols, p.rows));
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    pub(crate) fn env(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
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

    pub(crate) fn window_change(&mut self, channel: ChannelId, size: WindowSize) {
        if let (Some(rec), true) = (
            self.state.recorder.get(),
            self.pty_channels.contains(&channel),
        ) {
            rec.resize(size.cols, size.rows);
        }
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::WindowChange(size));
        }
    }

    pub(crate) fn signal(&mut self, channel: ChannelId, signal: Sig) {
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::Signal(signal));
        }
    }

    pub(crate) async fn input(&mut self, channel: ChannelId, code: Option<u32>, data: &[u8]) {
        let bytes = Bytes::copy_from_slice(data);
        let event = match code {
            None => ToTarget::Data(bytes),
            Some(code) => ToTarget::ExtendedData(code, bytes),
        };
        self.operator_input(channel, event, data.len()).await;
    }

    pub(crate) fn eof(&mut self, channel: ChannelId) {
        if let Some(relay) = self.relay(channel) {
            relay.forward(ToTarget::Eof);
        }
    }

    pub(crate) fn close(&mut self, channel: ChannelId) {
        self.pty_channels.remove(&channel);
        self.tell_guard(GuardEvent::ChannelClosed { channel });
        let removed = self.channels.remove(&channel);
        self.state.open_channels.send_replace(self.channels.len());
        if let Some(ChannelKind::Relay(relay)) = removed {
            // a client that closes as soon as it has the program's exit status (dbclient)
            // can do so before the target's own close reaches Gatehouse: the program ended
            // on the target, and that is why the session ends
            self.state.set_end_reason(if relay.target_finished() {
                EndReason::TargetClosed
            } else {
                EndReason::ClientClosed
            });
            relay.forward(ToTarget::Close);
        }
    }
}
