//! What all connections of the SSH front share: the store, the node's settings (login gate,
//! recordings root, through the front config), the host key, the upstream client config and
//! the node's live registry. The accept loop is `serve.rs`.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_session::{FrontConfig, LiveSessions};
use gatehouse_store::Store;
use russh::keys::PrivateKey;
use russh::server;
use thiserror::Error;

/// The window each operator channel is granted (russh's default, made explicit because the
/// throttle in `Connection::adjust_window` returns to it).
pub(crate) const OPERATOR_WINDOW: u32 = 2 << 20;

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

/// Ciphers Gatehouse asks targets for, first choice first: AES-256-GCM before
/// ChaCha20-Poly1305 (russh's default first), because both ends of this leg run on server
/// CPUs with AES instructions, where AES-GCM is the cheaper of the two per relayed byte.
/// (The operator's client chooses on the other leg.)
const UPSTREAM_CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

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
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(UPSTREAM_CIPHERS),
                ..russh::Preferred::DEFAULT
            },
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

    pub(crate) fn server_config(&self) -> Arc<server::Config> {
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
