//! In-band reauthentication against the store: the operator's argon2 password hash and,
//! when enrolled, a TOTP code (each code accepted once). Both go through the node's login
//! gate: a wrong answer counts against the operator's account and the connection's source
//! like a wrong login password, a locked-out account is refused without hashing, and the
//! hash waits for a hashing permit like any other.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_store::Store;

use crate::guard::Reauthenticator;
use crate::login::LoginGate;

pub struct StoreReauth {
    pub store: Store,
    pub operator: String,
    pub has_password: bool,
    pub has_totp: bool,
    /// The node's login gate (`FrontConfig::login`).
    pub login: Arc<LoginGate>,
    /// The operator's connection, whose source the failures count against.
    pub peer: SocketAddr,
}

impl StoreReauth {
    /// Whether the gate lets this operator try a secret now.
    fn may_try(&self) -> bool {
        self.login
            .check(self.peer, Some(self.operator.as_str()))
            .is_ok()
    }

    fn count(&self, ok: bool) -> bool {
        if !ok {
            self.login
                .record_failure(self.peer.ip(), Some(self.operator.as_str()));
        }
        ok
    }
}

impl Reauthenticator for StoreReauth {
    fn available(&self) -> bool {
        self.has_password
    }

    async fn check_password(&self, answer: String) -> bool {
        if !self.may_try() {
            return false;
        }
        let stored = match self.store.operator(&self.operator).await {
            Ok(Some(o)) if !o.locked => o.password_hash,
            _ => None,
        };
        let ok = self.login.verify_password(answer, stored).await;
        self.count(ok)
    }

    fn wants_code(&self) -> bool {
        self.has_totp
    }

    async fn check_code(&self, answer: String) -> bool {
        if !self.may_try() {
            return false;
        }
        let ok = self
            .store
            .verify_totp(&self.operator, &answer)
            .await
            .unwrap_or(false);
        self.count(ok)
    }
}
