//! Environments, operators, their public keys, and grants (operator × environment).

use sqlx::Row;

use crate::passwords::StoredPassword;
use crate::{Result, Store, StoreError, expect_row, first_column, insert_error, now_millis};

// whether a TOTP secret is enrolled comes with the row (the secret itself stays unread and
// sealed until a code is checked): admission needs it and reads the operator anyway
const OPERATOR_COLUMNS: &str = "name, password_hash, locked, created_at, scram_verifier,
    CAST(CASE WHEN totp_secret IS NULL THEN 0 ELSE 1 END AS BIGINT)";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRecord {
    pub name: String,
    pub password_hash: Option<String>,
    /// SCRAM-SHA-256 verifier; None for passwords set before the PostgreSQL front existed.
    pub scram_verifier: Option<String>,
    pub locked: bool,
    pub created_at: i64,
    /// A TOTP secret is enrolled (not whether it opens: [`Store::verify_totp`] finds that).
    pub has_totp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub operator: String,
    pub environment: String,
    pub granted_at: i64,
}

fn operator_from_row(r: &sqlx::any::AnyRow) -> Result<OperatorRecord> {
    Ok(OperatorRecord {
        name: r.try_get(0)?,
        password_hash: r.try_get(1)?,
        locked: r.try_get::<i64, _>(2)? != 0,
        created_at: r.try_get(3)?,
        scram_verifier: r.try_get(4)?,
        has_totp: r.try_get::<i64, _>(5)? != 0,
    })
}

impl Store {
    pub async fn add_environment(&self, name: &str) -> Result<()> {
        let now = now_millis();
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO environments (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| insert_error(e, "environment", name, None))?;
        crate::policies::record_policy_version(&mut tx, name, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn environment_exists(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT COUNT(*) FROM environments WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    pub async fn list_environments(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM environments ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        first_column(&rows)
    }

    pub async fn add_operator(&self, name: &str, password: Option<&StoredPassword>) -> Result<()> {
        let _turn = self.write_turn().await?;
        sqlx::query(
            "INSERT INTO operators (name, password_hash, scram_verifier, locked, created_at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(name)
        .bind(password.map(|p| p.hash.as_str()))
        .bind(password.map(|p| p.scram.as_str()))
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "user", name, None))?;
        Ok(())
    }

    pub async fn set_operator_password(&self, name: &str, password: &StoredPassword) -> Result<()> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE operators SET password_hash = $1, scram_verifier = $2 WHERE name = $3",
        )
        .bind(&password.hash)
        .bind(&password.scram)
        .bind(name)
        .execute(&self.pool)
        .await?;
        expect_row(done, "user", name)
    }

    pub async fn operator(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(operator_from_row).transpose()
    }

    pub async fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
        let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(operator_from_row).collect()
    }

    /// Adds an authorized public key (OpenSSH text form) identified by its SHA-256 fingerprint.
    pub async fn add_operator_key(
        &self,
        operator: &str,
        fingerprint: &str,
        public_key: &str,
    ) -> Result<()> {
        let _turn = self.write_turn().await?;
        sqlx::query(
            "INSERT INTO operator_keys (operator, fingerprint, public_key, added_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(operator)
        .bind(fingerprint)
        .bind(public_key)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "public key", fingerprint, Some(("user", operator))))?;
        Ok(())
    }

    pub async fn operator_has_key(&self, operator: &str, fingerprint: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM operator_keys WHERE operator = $1 AND fingerprint = $2",
        )
        .bind(operator)
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    pub async fn grant(&self, operator: &str, environment: &str) -> Result<()> {
        if self.operator(operator).await?.is_none() {
            return Err(StoreError::NotFound {
                kind: "user",
                name: operator.to_owned(),
            });
        }
        if !self.environment_exists(environment).await? {
            return Err(StoreError::NotFound {
                kind: "environment",
                name: environment.to_owned(),
            });
        }
        let _turn = self.write_turn().await?;
        sqlx::query("INSERT INTO grants (operator, environment, granted_at) VALUES ($1, $2, $3)")
            .bind(operator)
            .bind(environment)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| insert_error(e, "grant", &format!("{operator} → {environment}"), None))?;
        Ok(())
    }

    pub async fn granted_environments(&self, operator: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT environment FROM grants WHERE operator = $1 ORDER BY environment")
                .bind(operator)
                .fetch_all(&self.pool)
                .await?;
        first_column(&rows)
    }

    pub async fn list_grants(&self) -> Result<Vec<GrantRecord>> {
        let rows = sqlx::query(
            "SELECT operator, environment, granted_at FROM grants ORDER BY operator, environment",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(GrantRecord {
                    operator: r.try_get(0)?,
                    environment: r.try_get(1)?,
                    granted_at: r.try_get(2)?,
                })
            })
            .collect()
    }
}
