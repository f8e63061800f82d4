//! TOTP second factor (RFC 6238, 6 digits, 30 s, SHA-1 — what authenticator apps expect),
//! asked at in-band reauthentication. The secret is sealed under the master key like
//! target credentials.

use sqlx::Row;
use totp_rs::{Builder, Secret, Totp};

use crate::{Result, Store, StoreError, expect_row};

const ISSUER: &str = "Gatehouse";

fn context(operator: &str) -> String {
    format!("gatehouse operator totp:{operator}")
}

fn totp(operator: &str, secret: Vec<u8>) -> Result<Totp> {
    Builder::new()
        .with_secret(Secret::from(secret))
        .with_account_name(operator)
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| StoreError::Corrupt(format!("totp secret of '{operator}': {e}")))
}

impl Store {
    /// Enrolls (or re-enrolls) an operator and returns the `otpauth://` URI to scan.
    pub async fn enroll_totp(&self, operator: &str) -> Result<String> {
        let secret = Secret::generate();
        let t = totp(operator, secret.as_ref().to_vec())?;
        let url = t
            .to_url()
            .map_err(|e| StoreError::Corrupt(format!("otpauth uri: {e}")))?;
        let sealed = self.master_key.seal(&context(operator), secret.as_ref());
        let done = sqlx::query("UPDATE operators SET totp_secret = $1 WHERE name = $2")
            .bind(sealed)
            .bind(operator)
            .execute(&self.pool)
            .await?;
        expect_row(done, "user", operator)?;
        Ok(url)
    }

    async fn totp_of(&self, operator: &str) -> Result<Option<Totp>> {
        let row = sqlx::query("SELECT totp_secret FROM operators WHERE name = $1")
            .bind(operator)
            .fetch_optional(&self.pool)
            .await?;
        let Some(sealed) = row
            .map(|r| r.try_get::<Option<Vec<u8>>, _>(0))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let secret = self.master_key.open(&context(operator), &sealed)?;
        totp(operator, secret).map(Some)
    }

    pub async fn has_totp(&self, operator: &str) -> Result<bool> {
        Ok(self.totp_of(operator).await?.is_some())
    }

    /// Whether `code` is the operator's current code (one 30 s step of skew allowed).
    /// `false` for an operator without TOTP.
    pub async fn verify_totp(&self, operator: &str, code: &str) -> Result<bool> {
        Ok(self
            .totp_of(operator)
            .await?
            .is_some_and(|t| t.check_current(code.trim()).is_some()))
    }
}
