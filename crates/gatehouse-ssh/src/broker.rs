//! The accept loop and what all connections share: the store, the node name, the
//! login gate (through the front config) and the node's live registry, in which every
//! connection is tracked (kills, policy changes and graceful shutdown go through it).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{EndReason, Protocol};
use gatehouse_session::{Control, FrontConfig, LiveSessions, serve_front};
use gatehouse_store::Store;
use russh::keys::PrivateKey;
use russh::server;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::connection::{Connection, ConnectionState};

/// The window each operator channel is granted (russh's default, made explicit because the
/// throttle in `Connection::adjust_window` returns to it).
pub(crate) const OPERATOR_WINDOW: u32 = 2 << 20;

/// How long a connection gets at shutdown to take the disconnect before it is dropped.
const SHUTDOWN_PARTING: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum SshError {
    #[error("ssh listener failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// Settings of the SSH front.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub front: FrontConfig,
    pub host_key: PrivateKey,
}

impl BrokerConfig {
    pub fn new(front: FrontConfig, host_key: PrivateKey) -> Self {
        BrokerConfig { front, host_key }
    }
}

/// State shared by every connection of one broker.
pub struct Broker {
    pub(crate) store: Store,
    pub(crate) config: BrokerConfig,
    pub(crate) upstream_config: Arc<russh::client::Config>,
    /// The node's live connections and guards (shared with the node's other fronts).
    pub(crate) live: Arc<LiveSessions>,
}

impl Broker {
    /// A broker sharing `live` with the node's other fronts.
    pub fn with_live(store: Store, config: BrokerConfig, live: Arc<LiveSessions>) -> Arc<Broker> {
        let upstream_config = russh::client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        Arc::new(Broker {
            store,
            config,
            upstream_config: Arc::new(upstream_config),
            live,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn server_config(&self) -> Arc<server::Config> {
        use russh::MethodKind;
        Arc::new(server::Config {
            methods: russh::MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
            keys: vec![self.config.host_key.clone()],
            auth_rejection_time: Duration::from_millis(500),
            auth_rejection_time_initial: Some(Duration::ZERO),
            // Gatehouse enforces idle limits itself; russh's own timer would count keepalives.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            max_auth_attempts: 6,
            window_size: OPERATOR_WINDOW,
            ..Default::default()
        })
    }
}

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
        |socket, peer| {
            let broker = broker.clone();
            let config = config.clone();
            async move { serve_connection(broker, config, socket, peer).await }
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
    let handler = Connection::new(broker.clone(), state.clone());
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
        // connection slot (10,000 of them would lock everyone out).
        let grace = broker.config.front.login_grace;
        let login_deadline = tokio::time::Instant::now() + grace;
        let running = match tokio::time::timeout_at(
            login_deadline,
            server::run_stream(config, socket, handler),
        )
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
        state.finish(&broker).await;
    }
    .instrument(span)
    .await;
}
