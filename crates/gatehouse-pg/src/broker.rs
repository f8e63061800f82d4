//! The accept loop and what all PostgreSQL connections share: the store, the node's live
//! sessions, the cancel-key map and the TLS configuration.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use gatehouse_core::EndReason;
use gatehouse_session::{FrontConfig, GuardEvent, LiveSessions, accept_loop, drain_connections};
use gatehouse_store::Store;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::cancel::CancelMap;

#[derive(Debug, Error)]
pub enum PgError {
    #[error("postgres listener failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// Settings of the PostgreSQL front.
#[derive(Clone)]
pub struct PgConfig {
    pub front: FrontConfig,
    pub tls: Arc<rustls::ServerConfig>,
    /// Accept a cleartext password (inside TLS only) besides SCRAM-SHA-256.
    pub allow_cleartext: bool,
}

impl PgConfig {
    pub fn new(front: FrontConfig, tls: Arc<rustls::ServerConfig>) -> Self {
        PgConfig {
            front,
            tls,
            allow_cleartext: false,
        }
    }
}

pub struct PgBroker {
    pub(crate) store: Store,
    pub(crate) config: PgConfig,
    pub(crate) live: Arc<LiveSessions>,
    pub(crate) cancels: CancelMap,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    /// Salt secret for the mock SCRAM exchange of unknown operators.
    pub(crate) mock_secret: [u8; 32],
    /// Guards of live sessions, for shutdown.
    sessions: Mutex<HashMap<u64, mpsc::UnboundedSender<GuardEvent<()>>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl PgBroker {
    pub fn new(store: Store, config: PgConfig, live: Arc<LiveSessions>) -> Arc<PgBroker> {
        Arc::new(PgBroker {
            acceptor: tokio_rustls::TlsAcceptor::from(config.tls.clone()),
            mock_secret: rand::random(),
            store,
            config,
            live,
            cancels: CancelMap::default(),
            sessions: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn track(&self, guard: mpsc::UnboundedSender<GuardEvent<()>>) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(id, guard);
        }
        id
    }

    pub(crate) fn untrack(&self, id: u64) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(&id);
        }
    }
}

/// Serves PostgreSQL on `listener` until `shutdown` resolves, then ends live sessions (end
/// reason `shutdown`, FATAL 57P01 to the client) and waits for their logs to be sealed, at
/// most `shutdown_grace`.
pub async fn run(
    listener: TcpListener,
    broker: Arc<PgBroker>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PgError> {
    broker.live.ensure_watcher();
    let tasks = accept_loop(
        &listener,
        broker.config.front.max_connections,
        shutdown,
        |socket, peer| {
            let broker = broker.clone();
            async move { crate::conn::serve(broker, socket, peer).await }
        },
    )
    .await
    .map_err(PgError::Accept)?;
    let guards: Vec<_> = broker
        .sessions
        .lock()
        .map(|mut s| s.drain().map(|(_, g)| g).collect())
        .unwrap_or_default();
    tracing::info!(
        live = guards.len(),
        "shutting down: ending live SQL sessions"
    );
    for g in guards {
        let _ = g.send(GuardEvent::Kill(EndReason::Shutdown));
    }
    if !drain_connections(tasks, broker.config.front.shutdown_grace).await {
        tracing::warn!("SQL sessions still open after shutdown grace");
    }
    Ok(())
}
