//! In-band reauthentication against the store: the operator's argon2 password hash and,
//! when enrolled, a TOTP code.

use gatehouse_store::{Store, passwords};

use crate::guard::Reauthenticator;

pub struct StoreReauth {
    pub store: Store,
    pub operator: String,
    pub has_password: bool,
    pub has_totp: bool,
}

impl Reauthenticator for StoreReauth {
    fn available(&self) -> bool {
        self.has_password
    }

    async fn check_password(&self, answer: String) -> bool {
        let stored = match self.store.operator(&self.operator).await {
            Ok(Some(o)) if !o.locked => o.password_hash,
            _ => None,
        };
        tokio::task::spawn_blocking(move || passwords::verify_password(&answer, stored.as_deref()))
            .await
            .unwrap_or(false)
    }

    fn wants_code(&self) -> bool {
        self.has_totp
    }

    async fn check_code(&self, answer: String) -> bool {
        self.store
            .verify_totp(&self.operator, &answer)
            .await
            .unwrap_or(false)
    }
}
