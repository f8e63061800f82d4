//! TOTP second factor (RFC 6238, 6 digits, 30 s, SHA-1 — what authenticator apps expect),
//! asked at in-band reauthentication. The secret is sealed under the master key like
//! target credentials. A code is accepted once: the store remembers the time step of the
//! last accepted code and takes only later ones (RFC 6238 §5.2), atomically, so two
//! concurrent uses of one code cannot both pass.

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
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE operators SET totp_secret = $1, totp_last_step = NULL WHERE name = $2",
        )
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

    /// Whether `code` is the operator's current code (one 30 s step of skew allowed) and
    /// no code of its step or a later one was accepted before. `false` for an operator
    /// without TOTP.
    pub async fn verify_totp(&self, operator: &str, code: &str) -> Result<bool> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_totp_at(operator, code, now).await
    }

    /// [`Store::verify_totp`] at `unix_secs` (tests pass exact times).
    pub async fn verify_totp_at(&self, operator: &str, code: &str, unix_secs: u64) -> Result<bool> {
        let Some(step) = self
            .totp_of(operator)
            .await?
            .and_then(|t| t.check(code.trim(), unix_secs))
        else {
            return Ok(false);
        };
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        // claim the step: only one caller can move it forward past a given value
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE operators SET totp_last_step = $1
             WHERE name = $2 AND (totp_last_step IS NULL OR totp_last_step < $3)",
        )
        .bind(step)
        .bind(operator)
        .bind(step)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            tracing::warn!(operator = %operator, "TOTP code refused: its time step was already used");
            return Ok(false);
        }
        Ok(true)
    }
}
