//! The russh handler for one operator connection, reduced to delegation: authentication
//! (`auth.rs`), channels and their requests (`channels.rs`), the recording (`recording.rs`),
//! refused forwarding (`forwarding.rs`). What the connection shares with its relays, guard
//! and end is `state.rs`. The session's lifecycle rules (admission, guard wiring, the end)
//! are `gatehouse_session`'s, shared with the PostgreSQL front.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gatehouse_core::ForwardingKind;
use gatehouse_session::{
    Allowed, Enforcement, GuardEvent, GuardSetup, SessionIdentity, StoreReauth,
};
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Pty, Sig};
use serde_json::json;

use crate::broker::Broker;
use crate::channels::{ChannelKind, PtyRequest};
use crate::enforce::SshOperator;
use crate::relay::{self, WindowSize};
use crate::state::ConnectionState;
use crate::upstream::Upstream;

/// Where the authenticated operator's session may go.
pub(crate) enum Target {
    /// Not authenticated yet.
    Pending,
    Allowed(Box<Allowed>),
    /// Refused with this message (shown at the first channel request).
    Denied(String),
}

/// The russh handler for one operator connection.
pub(crate) struct Connection {
    pub(crate) broker: Arc<Broker>,
    pub(crate) state: Arc<ConnectionState>,
    /// The registered session (allowed or denied), once authentication succeeded.
    pub(crate) session: Option<SessionIdentity>,
    pub(crate) target: Target,
    pub(crate) upstream: Option<Arc<Upstream>>,
    pub(crate) channels: HashMap<ChannelId, ChannelKind>,
    pub(crate) pty_channels: HashSet<ChannelId>,
    /// TERM and size of each channel's pty, for the recording header.
    pub(crate) pty_info: HashMap<ChannelId, (String, u32, u32)>,
    /// Subsystems besides sftp the environment allows, read at login.
    pub(crate) subsystems: Vec<String>,
    pub(crate) enforcement: Option<Enforcement<ChannelId>>,
    /// The session's place under the node's live-session limit, from its admission to the
    /// connection's end.
    pub(crate) room: Option<gatehouse_session::SessionRoom>,
    /// The connection's login slot, released once the session holds its room.
    pub(crate) login_slot: gatehouse_session::LoginSlot,
}

impl Connection {
    pub(crate) fn new(
        broker: Arc<Broker>,
        state: Arc<ConnectionState>,
        login_slot: gatehouse_session::LoginSlot,
    ) -> Self {
        Connection {
            broker,
            state,
            session: None,
            target: Target::Pending,
            upstream: None,
            channels: HashMap::new(),
            pty_channels: HashSet::new(),
            pty_info: HashMap::new(),
            subsystems: Vec::new(),
            enforcement: None,
            room: None,
            login_slot,
        }
    }

    /// Starts the session's guard (allowed sessions only), once authentication completed.
    fn start_guard(&mut self, session: &mut Session) {
        let (Target::Allowed(allowed), Some(identity)) = (&self.target, &self.session) else {
            return;
        };
        let Ok(registration) = self.state.registration.lock() else {
            return;
        };
        let Some(registration) = registration.as_ref() else {
            return;
        };
        let store = self.broker.store();
        // the guard runs in the connection's span
        let entered = self.state.span.enter();
        let enforcement = gatehouse_session::start_guard(
            GuardSetup {
                store,
                session: identity,
                policy: &allowed.policy,
                opened: tokio::time::Instant::now(),
                end: self.state.end.clone(),
                markers: self.state.clone(),
                registration,
            },
            SshOperator {
                handle: session.handle(),
                sever: self.state.sever.clone(),
                open_channels: self.state.open_channels.subscribe(),
            },
            StoreReauth {
                store: store.clone(),
                operator: identity.operator.clone(),
                has_password: allowed.has_password,
                has_totp: allowed.has_totp,
                login: self.broker.config.front.login.clone(),
                peer: self.state.peer,
            },
        );
        drop(entered);
        self.enforcement = Some(enforcement);
    }

    pub(crate) fn tell_guard(&self, event: GuardEvent<ChannelId>) {
        if let Some(e) = &self.enforcement {
            let _ = e.events.send(event);
        }
    }

    pub(crate) fn touch(&self) {
        if let Some(e) = &self.enforcement {
            e.clock.touch();
        }
    }

    pub(crate) fn peer(&self) -> String {
        self.state.peer.to_string()
    }
}

/// Each handler future is awaited inside russh's session task, whose size is that of its
/// largest: the rare, large ones (login, a new channel and the connection to the target,
/// refused forwarding with its audit write) are boxed so that a live session's task does
/// not keep room for them (memory per live session); the per-keystroke ones stay inline.
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
        Ok(Box::pin(self.offered_key(user, offer)).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Box::pin(self.signed_key(user, key)).await)
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(Box::pin(self.password(user, password)).await)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Box::pin(self.open_session_channel(channel, reply, session)).await
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
        let detail = json!({"host": host_to_connect, "port": port_to_connect,
            "originator": format!("{originator_address}:{originator_port}")});
        Box::pin(self.refuse_tunnel(ForwardingKind::LocalPort, detail, reply, session)).await;
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
        let detail = json!({"socket": socket_path});
        Box::pin(self.refuse_tunnel(ForwardingKind::LocalPort, detail, reply, session)).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let detail = json!({"address": address, "port": *port});
        Box::pin(self.refuse_forwarding(ForwardingKind::RemotePort, detail, session)).await;
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let detail = json!({"socket": socket_path});
        Box::pin(self.refuse_forwarding(ForwardingKind::RemotePort, detail, session)).await;
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let detail = json!({"channel": channel.to_string()});
        Box::pin(self.refuse_forwarding(ForwardingKind::Agent, detail, session)).await;
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
        let detail = json!({"channel": channel.to_string()});
        Box::pin(self.refuse_forwarding(ForwardingKind::X11, detail, session)).await;
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
        let request = PtyRequest {
            term,
            cols: col_width,
            rows: row_height,
            pix_width,
            pix_height,
            modes,
        };
        self.pty(channel, request, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.env(channel, variable_name, variable_value, session)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, relay::Request::Shell, session)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_request(channel, relay::Request::Exec(data.to_vec()), session)
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let request = relay::Request::Subsystem(name.to_owned());
        self.start_request(channel, request, session).await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = WindowSize {
            cols,
            rows,
            pix_width,
            pix_height,
        };
        self.window_change(channel, size);
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        Connection::signal(self, channel, signal);
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.input(channel, None, data).await;
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.input(channel, Some(code), data).await;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.eof(channel);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.close(channel);
        Ok(())
    }
}
