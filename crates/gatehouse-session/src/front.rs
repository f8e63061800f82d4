//! What every front (SSH, PostgreSQL) is told by the node, with the same defaults.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::LoginLimits;

use crate::{LoginGate, LoginSlots, SessionLimit, StartQueue};

#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// Display name of this broker node in the session registry.
    pub node: String,
    /// This node's unique id (sessions are owned by it; defaults to the name until the
    /// binary sets the id it keeps beside the host key).
    pub node_id: String,
    /// Where session recordings and statement logs are written.
    pub recordings_root: PathBuf,
    /// Connections not yet logged in on this front (each front its own); further ones wait
    /// in the listen backlog.
    pub logins: Arc<LoginSlots>,
    /// The node's login gate (failed-login limits, bounded password hashing). Shared: every
    /// front of a node gets a clone of the same config, so an SSH failure and a PostgreSQL
    /// failure count toward the same limits.
    pub login: Arc<LoginGate>,
    /// How long live sessions get to close after shutdown is requested.
    pub shutdown_grace: Duration,
    /// How long a connection may take to log in (banner or startup, TLS handshake,
    /// authentication) before it is dropped: silent sockets must not hold connection slots.
    pub login_grace: Duration,
    /// The node's start queue (store registration and target login, so many at once).
    /// Shared like `login`: both fronts queue in the same line.
    pub starting: Arc<StartQueue>,
    /// The node's limit on live sessions (both fronts), shared like `starting`.
    pub sessions: Arc<SessionLimit>,
}

/// Default [`FrontConfig::login_grace`], as OpenSSH's `LoginGraceTime` halved.
pub const DEFAULT_LOGIN_GRACE: Duration = Duration::from_secs(60);

impl FrontConfig {
    pub fn new(node: String, recordings_root: PathBuf) -> Self {
        FrontConfig {
            node_id: node.clone(),
            node,
            recordings_root,
            logins: LoginSlots::new(crate::open_files::DEFAULT_MAX_UNAUTHENTICATED as usize),
            login: LoginGate::new(LoginLimits::default()),
            shutdown_grace: Duration::from_secs(5),
            login_grace: DEFAULT_LOGIN_GRACE,
            starting: StartQueue::new(crate::DEFAULT_MAX_STARTING, crate::DEFAULT_START_WAIT),
            sessions: SessionLimit::unlimited(),
        }
    }
}
