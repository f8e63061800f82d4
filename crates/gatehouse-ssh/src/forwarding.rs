//! Forwarding on the SSH front: local and remote port forwarding, Unix-socket forwarding,
//! agent and X11 forwarding are refused (Gatehouse records terminals and transfers; a
//! tunnel would carry traffic it cannot show a reviewer), audited, and explained to the
//! operator on a live channel.

use gatehouse_core::{ForwardingKind, ForwardingPolicy};
use gatehouse_store::AuditEvent;
use russh::server::{ChannelOpenHandle, Session};
use serde_json::json;

use crate::channels::ChannelKind;
use crate::connection::Connection;
use crate::deny::notice;

impl Connection {
    /// Refuses a forwarding request, audits it and tells the operator on a live channel.
    pub(crate) async fn refuse_forwarding(
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
                operator: self.session.as_ref().map(|s| s.operator.as_str()),
                session_id: self.session.as_ref().map(|s| s.id.as_str()),
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

    /// Refuses a channel that would open a tunnel.
    pub(crate) async fn refuse_tunnel(
        &self,
        kind: ForwardingKind,
        detail: serde_json::Value,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) {
        self.refuse_forwarding(kind, detail, session).await;
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
    }
}
