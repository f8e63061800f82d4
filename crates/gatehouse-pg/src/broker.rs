//! What all PostgreSQL connections share: the store, the node's live registry, the
//! cancel-key map and the TLS configuration. The accept loop is `serve.rs`.

use std::sync::Arc;

use gatehouse_session::{ConnectionThreads, FrontConfig, LiveSessions};
use gatehouse_store::Store;
use thiserror::Error;

use crate::cancel::CancelMap;
use crate::pool::{PoolConfig, TargetPool};

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
    /// Threads that run the connections (each an event loop of its own); `None`: the
    /// caller's runtime.
    pub threads: Option<Arc<ConnectionThreads>>,
    /// Where the statement logs' recorders run (formatting, hashing and writing the lines
    /// a relay queues): the node's shared runtime, so that a connection thread spends its
    /// time relaying; `None`: the connection's own runtime.
    pub recorders: Option<tokio::runtime::Handle>,
    /// Target connections kept between sessions (`[postgres] target_pool`; off by default).
    pub pool: PoolConfig,
}

impl PgConfig {
    pub fn new(front: FrontConfig, tls: Arc<rustls::ServerConfig>) -> Self {
        PgConfig {
            front,
            tls,
            allow_cleartext: false,
            threads: None,
            recorders: None,
            pool: PoolConfig::default(),
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
    /// SCRAM salted passwords of the targets' credentials (see `scram_client`).
    pub(crate) salted: gatehouse_pgproto::scram_client::SaltedPasswords,
    /// Gatehouse's logins to targets kept between sessions.
    pub(crate) pool: Arc<TargetPool>,
}

impl PgBroker {
    pub fn new(store: Store, config: PgConfig, live: Arc<LiveSessions>) -> Arc<PgBroker> {
        Arc::new(PgBroker {
            acceptor: tokio_rustls::TlsAcceptor::from(config.tls.clone()),
            pool: TargetPool::new(config.pool),
            mock_secret: rand::random(),
            store,
            config,
            live,
            cancels: CancelMap::default(),

            salted: Default::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

impl PgBroker {
    /// Writes an audit event about a connection from `peer` (the store retries and counts
    /// a failed write; callers need not handle it).
    pub(crate) async fn audit(
        &self,
        kind: &str,
        operator: Option<&str>,
        session: Option<&str>,
        peer: std::net::SocketAddr,
        detail: serde_json::Value,
    ) {
        let _ = self
            .store
            .audit(&gatehouse_store::AuditEvent {
                kind,
                operator,
                session_id: session,
                source: Some(&peer.to_string()),
                detail,
            })
            .await;
    }
}
