//! The SSH front's accept loop: each connection tracked in the node's live registry
//! (kills, policy changes and graceful shutdown go through it), its login grace, the
//! severing of a client that will not leave, and its end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{EndReason, Protocol};
use gatehouse_session::{Control, LoginSlot, serve_front};
use russh::server;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::record_auth_failure;
use crate::broker::{Broker, SshError};
use crate::connection::Connection;
use crate::state::ConnectionState;

/// How long a connection gets at shutdown to take the disconnect before it is dropped.
const SHUTDOWN_PARTING: Duration = Duration::from_millis(500);

/// Serves SSH on `listener` until `shutdown` resolves, then disconnects live sessions (end
/// reason `shutdown`) and waits for them to be recorded, at most `shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SshError> {
    let config = broker.server_config();
    let front = &broker.config.front;
    // a guarded session's guard tells the operator and parts (bounded, then the socket is
    // dropped); any other connection is parted by `parting`
    serve_front(
        &listener,
        &broker.live,
        Protocol::Ssh,
        front,
        shutdown,
        |socket, peer, slot| {
            let broker = broker.clone();
            let config = config.clone();
            async move { serve_connection(broker, config, socket, peer, slot).await }
        },
    )
    .await
    .map_err(SshError::Accept)
}

/// How the registry ends a connection no guard runs for (still logging in, or refused):
/// the reason is recorded and the client disconnected, or dropped if it does not take the
/// disconnect within [`SHUTDOWN_PARTING`].
fn parting(
    handle: server::Handle,
    state: Arc<ConnectionState>,
) -> impl Fn(Control) + Send + Sync + 'static {
    move |control| {
        let Control::Kill(reason) = control else {
            return;
        };
        state.set_end_reason(reason.clone());
        let (handle, state) = (handle.clone(), state.clone());
        tokio::spawn(async move {
            let message = match reason {
                EndReason::Shutdown => "gatehouse is shutting down".to_owned(),
                other => format!("session ended: {}", other.to_stored()),
            };
            let disconnect =
                handle.disconnect(russh::Disconnect::ByApplication, message, "en".into());
            if !matches!(
                tokio::time::timeout(SHUTDOWN_PARTING, disconnect).await,
                Ok(Ok(()))
            ) {
                state.sever.notify_one();
            }
        });
    }
}

/// The socket for russh, and another descriptor of it to shut it down with.
fn severable(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std = socket.into_std()?;
    let other = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, other))
}

async fn serve_connection(
    broker: Arc<Broker>,
    config: Arc<server::Config>,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: LoginSlot,
) {
    let span = tracing::info_span!(
        "session",
        peer = %peer,
        session_id = tracing::field::Empty,
        operator = tracing::field::Empty,
        target = tracing::field::Empty,
        environment = tracing::field::Empty,
    );
    let state = Arc::new(ConnectionState::new(
        peer,
        span.clone(),
        broker.store().clone(),
    ));
    let handler = Connection::new(broker.clone(), state.clone(), slot);
    // russh runs the session in a task of its own that dropping its handle does not stop;
    // a second descriptor of the same socket lets Gatehouse shut the socket down itself
    // when a client will not leave (login grace over, or an ended session it will not read).
    let (socket, severable) = match severable(socket) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "cannot set up the connection");
            return;
        }
    };
    async {
        // The login grace covers the client's banner, the key exchange and authentication:
        // a socket that stays silent, or never finishes logging in, must not hold a
        // login slot for long (see gatehouse_session::LoginSlots).
        let grace = broker.config.front.login_grace;
        let login_deadline = tokio::time::Instant::now() + grace;
        // the futures before and after the live session are boxed: this task lives as long
        // as the session and would otherwise keep room for the largest (memory per session)
        let running = match Box::pin(tokio::time::timeout_at(
            login_deadline,
            server::run_stream(config, socket, handler),
        ))
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = ?e, "ssh handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(
                    grace_s = grace.as_secs_f64(),
                    "login grace expired before the client's banner: connection dropped"
                );
                return;
            }
        };
        let login_timer = {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(login_deadline).await;
                if !state.is_authenticated() {
                    tracing::info!(
                        grace_s = grace.as_secs_f64(),
                        "login grace expired before authentication: connection dropped"
                    );
                    state.sever.notify_one();
                } else if !state.is_admitted() {
                    // refused for a full node: it has had the grace to read why, and must
                    // not hold its login slot (and descriptors) for as long as it likes
                    tracing::info!(
                        grace_s = grace.as_secs_f64(),
                        "login grace expired on a connection refused as busy: connection dropped"
                    );
                    state.sever.notify_one();
                }
            })
        };
        let registration = broker
            .live
            .track(Protocol::Ssh, parting(running.handle(), state.clone()));
        if let Ok(mut r) = state.registration.lock() {
            *r = Some(registration);
        }
        let severed = state.sever.clone();
        let outcome = tokio::select! {
            outcome = running => outcome,
            // the guard ended the session but the client is not reading, or the login grace
            // ran out: shutting the socket down ends russh's session task too
            () = severed.notified() => {
                let _ = severable.shutdown(std::net::Shutdown::Both);
                Ok(())
            }
        };
        login_timer.abort();
        if let Err(e) = outcome {
            tracing::debug!(error = ?e, "ssh connection ended with an error");
        }
        if let Some(user) = state.key_only_failure() {
            Box::pin(record_auth_failure(&broker, state.peer, &user, "publickey")).await;
        }
        Box::pin(state.finish(broker.store())).await;
    }
    .instrument(span)
    .await;
}
