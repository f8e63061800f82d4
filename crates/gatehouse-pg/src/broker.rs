//! The accept loop and what all PostgreSQL connections share: the store, the node's live
//! sessions, the cancel-key map and the TLS configuration.

use std::future::Future;
use std::sync::Arc;

use gatehouse_core::Protocol;
use gatehouse_session::{FrontConfig, LiveSessions, serve_front};
use gatehouse_store::Store;
use thiserror::Error;
use tokio::net::TcpListener;

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
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
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
    let front = &broker.config.front;
    serve_front(
        &listener,
        &broker.live,
        Protocol::Postgres,
        front,
        shutdown,
        |socket, peer| {
            let broker = broker.clone();
            async move { crate::conn::serve(broker, socket, peer).await }
        },
    )
    .await
    .map_err(PgError::Accept)
}
