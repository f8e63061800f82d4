//! The login gate: the one place where every front (SSH, PostgreSQL) and the in-band
//! reauthentication ask whether a login may be tried, verify passwords, and report how it
//! went. It holds the node's failed-login limits (the pure rules are
//! `gatehouse_core::LoginLimiter`; this module only brings the clock, the lock and the
//! logging) and bounds concurrent password hashing: argon2 costs 19 MiB and a core for tens
//! of milliseconds, so N parallel wrong passwords must not run N hashes at once. Callers
//! wait for a permit; the fronts' login grace still bounds that wait.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use gatehouse_core::{FailureOutcome, LoginLimiter, LoginLimits, LoginRefusal, SourceBucket};
use gatehouse_store::{AuditEvent, Store};

use crate::passwords;
use serde_json::json;
use tokio::sync::Semaphore;

/// One failed login, as the front saw it.
#[derive(Debug, Clone, Copy)]
pub struct FailedLogin<'a> {
    pub peer: SocketAddr,
    /// The user name as typed (escaped in logs; it comes off the network).
    pub user: &'a str,
    /// The operator the user name names, if it parsed.
    pub operator: Option<&'a str>,
    /// `publickey`, `password`, `scram-sha-256`, …
    pub method: &'a str,
    /// `ssh` or `postgres`.
    pub protocol: &'a str,
    /// Whether a guessable secret (password, TOTP) was wrong: then the failure counts
    /// against the operator's account as well as the source.
    pub guessed_secret: bool,
}

/// The node's login gate, shared by both fronts (see [`crate::FrontConfig::login`]).
pub struct LoginGate {
    limiter: Mutex<LoginLimiter>,
    hashing: Arc<Semaphore>,
    permits: usize,
}

impl std::fmt::Debug for LoginGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGate")
            .field("hashing_permits", &self.permits)
            .finish_non_exhaustive()
    }
}

impl LoginGate {
    /// A gate hashing at most one password per core at a time.
    pub fn new(limits: LoginLimits) -> Arc<LoginGate> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoginGate::with_hashing_permits(limits, cores)
    }

    pub fn with_hashing_permits(limits: LoginLimits, permits: usize) -> Arc<LoginGate> {
        let permits = permits.max(1);
        Arc::new(LoginGate {
            limiter: Mutex::new(LoginLimiter::new(limits)),
            hashing: Arc::new(Semaphore::new(permits)),
            permits,
        })
    }

    fn now() -> std::time::Instant {
        // tokio's clock, so tests on a paused runtime control it
        tokio::time::Instant::now().into_std()
    }

    /// May `peer` try to log in now? With `account`, a guessable secret of that operator is
    /// about to be checked and the account's limit applies too. Logs a refusal.
    pub fn check(&self, peer: SocketAddr, account: Option<&str>) -> Result<(), LoginRefusal> {
        let verdict = self.limiter.lock().map_or(Ok(()), |l| {
            l.check(SourceBucket::of(peer.ip()), account, Self::now())
        });
        match verdict {
            Err(LoginRefusal::Source { retry_after }) => tracing::warn!(
                source = %peer,
                retry_after_s = retry_after.as_secs(),
                "login refused: too many failures from this source"
            ),
            Err(LoginRefusal::Account { retry_after }) => tracing::warn!(
                source = %peer,
                operator = %account.unwrap_or_default().escape_debug(),
                retry_after_s = retry_after.as_secs(),
                "login refused: too many failures for this account"
            ),
            Ok(()) => {}
        }
        verdict
    }

    /// Checks `password` against a stored argon2 hash (`None`: an unknown operator, checked
    /// against a dummy hash so it takes as long). Waits for a hashing permit; the permit is
    /// held by the hashing thread itself, so a caller that gives up (login grace) does not
    /// free it while its hash still runs.
    pub async fn verify_password(&self, password: String, stored: Option<String>) -> bool {
        self.hash_bounded(move || passwords::verify_password(&password, stored.as_deref()))
            .await
            .unwrap_or(false)
    }

    /// Runs `work` on the blocking pool once a hashing permit is free; `None` if it panicked.
    async fn hash_bounded<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.hashing.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .ok()
    }

    /// Counts a failed login (source; account too for a wrong secret), logs it and writes
    /// its `auth_failure` audit row.
    pub async fn failed(&self, store: &Store, f: FailedLogin<'_>) -> FailureOutcome {
        let out = self.record_failure(f.peer.ip(), f.operator.filter(|_| f.guessed_secret));
        crate::metrics::login_failed(f.method, out.source_locked_out, out.account_locked_out);
        tracing::warn!(
            source = %f.peer,
            user = %f.user.escape_debug(),
            method = f.method,
            source_locked_out = out.source_locked_out,
            account_locked_out = out.account_locked_out,
            "authentication failed"
        );
        let _ = store
            .audit(&AuditEvent {
                kind: "auth_failure",
                operator: f.operator,
                session_id: None,
                source: Some(&f.peer.to_string()),
                detail: json!({
                    "method": f.method,
                    "user": f.user,
                    "protocol": f.protocol,
                    "source_locked_out": out.source_locked_out,
                    "account_locked_out": out.account_locked_out,
                }),
            })
            .await;
        out
    }

    /// Counts a failure without auditing it (the caller reports it its own way, e.g. the
    /// guard's reauthentication events).
    pub fn record_failure(&self, source: IpAddr, account: Option<&str>) -> FailureOutcome {
        self.limiter
            .lock()
            .map_or(FailureOutcome::default(), |mut l| {
                l.record_failure(SourceBucket::of(source), account, Self::now())
            })
    }

    /// `operator` logged in from `source`: forgets that account's failures only.
    pub fn succeeded(&self, source: IpAddr, operator: &str) {
        if let Ok(mut l) = self.limiter.lock() {
            l.record_success(SourceBucket::of(source), operator);
        }
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
