//! The accept loop and what all connections share: the store, the node name, the
//! login gate (through the front config) and the registry of live connections (for graceful shutdown).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::EndReason;
use gatehouse_session::{FrontConfig, LiveSessions, accept_loop, drain_connections};
use gatehouse_store::Store;
use russh::keys::PrivateKey;
use russh::server;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::connection::{Connection, ConnectionState};

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
    connections: Mutex<HashMap<u64, server::Handle>>,
    /// Guards of live sessions (shared with the node's other fronts).
    pub(crate) live: Arc<LiveSessions>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Broker {
    /// A broker with its own live-session registry.
    pub fn new(store: Store, config: BrokerConfig) -> Arc<Broker> {
        let live = LiveSessions::new(store.clone(), config.front.node.clone());
        Broker::with_live(store, config, live)
    }

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
            connections: Mutex::new(HashMap::new()),
            live,
            next_id: std::sync::atomic::AtomicU64::new(1),
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
            ..Default::default()
        })
    }

    fn live_count(&self) -> usize {
        self.connections.lock().map(|l| l.len()).unwrap_or(0)
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
    broker.live.ensure_watcher();
    let tasks = accept_loop(
        &listener,
        broker.config.front.max_connections,
        shutdown,
        |socket, peer| {
            let broker = broker.clone();
            let config = config.clone();
            async move { serve_connection(broker, config, socket, peer).await }
        },
    )
    .await
    .map_err(SshError::Accept)?;
    let handles: Vec<server::Handle> = broker
        .connections
        .lock()
        .map(|mut l| l.drain().map(|(_, h)| h).collect())
        .unwrap_or_default();
    tracing::info!(
        live = handles.len(),
        "shutting down: disconnecting live sessions"
    );
    for h in handles {
        let _ = h
            .disconnect(
                russh::Disconnect::ByApplication,
                "gatehouse is shutting down".into(),
                "en".into(),
            )
            .await;
    }
    if !drain_connections(tasks, broker.config.front.shutdown_grace).await {
        tracing::warn!(
            left = broker.live_count(),
            "sessions still open after shutdown grace"
        );
    }
    Ok(())
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
    async {
        let running = match server::run_stream(config, socket, handler).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = ?e, "ssh handshake failed");
                return;
            }
        };
        let key = broker
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut live) = broker.connections.lock() {
            live.insert(key, running.handle());
        }
        let severed = state.sever.clone();
        let outcome = tokio::select! {
            outcome = running => outcome,
            // the guard ended the session but the client is not reading: dropping the
            // running session closes the socket
            () = severed.notified() => Ok(()),
        };
        // Removed already by shutdown: that is why it ended.
        if let Ok(mut live) = broker.connections.lock()
            && live.remove(&key).is_none()
        {
            state.set_end_reason(EndReason::Shutdown);
        }
        if let Err(e) = outcome {
            tracing::debug!(error = ?e, "ssh connection ended with an error");
        }
        state.finish(&broker).await;
    }
    .instrument(span)
    .await;
}
