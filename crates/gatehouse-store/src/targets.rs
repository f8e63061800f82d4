//! Targets: where an operator may be brokered to, with the credential Gatehouse uses there
//! (sealed under the master key) and the target's pinned host key.

use gatehouse_core::{Protocol, TargetKind, TlsMode};
use sqlx::Row;
use std::sync::LazyLock;

use crate::policies::{POLICY_COLUMNS, StoredPolicy, policy_from_columns};
use crate::{Result, Store, StoreError, expect_row, insert_error, now_millis};

/// A target to create. `credential` is the plaintext secret (a private key in OpenSSH
/// format for SSH targets); it is sealed before it reaches the database.
#[derive(Debug, Clone)]
pub struct NewTarget<'a> {
    pub name: &'a str,
    pub environment: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub username: &'a str,
    pub credential: &'a [u8],
    pub kind: TargetKind,
}

/// A stored target, without its credential (see [`Store::target_credential`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    pub name: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub kind: TargetKind,
}

impl TargetRecord {
    pub fn protocol(&self) -> Protocol {
        self.kind.protocol()
    }
}

/// The kind's columns: host_key, trust_on_first_use, database_name, tls_mode, tls_ca,
/// kept_logins.
type KindColumns<'a> = (
    Option<&'a str>,
    bool,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    bool,
);

fn kind_columns(kind: &TargetKind) -> KindColumns<'_> {
    match kind {
        TargetKind::Ssh { host_key, tofu } => (host_key.as_deref(), *tofu, None, None, None, true),
        TargetKind::Postgres {
            database,
            tls,
            ca,
            kept_logins,
        } => (
            None,
            false,
            database.as_deref(),
            Some(tls.as_str()),
            ca.as_deref(),
            *kept_logins,
        ),
    }
}

fn credential_context(target: &str) -> String {
    format!("gatehouse target credential:{target}")
}

const TARGET_COLUMNS: &str = "name, environment, protocol, host, port, username, host_key, trust_on_first_use, database_name, tls_mode, tls_ca, kept_logins";

fn target_from_row(r: &sqlx::any::AnyRow) -> Result<TargetRecord> {
    let protocol: String = r.try_get(2)?;
    let port: i64 = r.try_get(4)?;
    let kind = match protocol.parse().map_err(StoreError::Corrupt)? {
        Protocol::Ssh => TargetKind::Ssh {
            host_key: r.try_get(6)?,
            tofu: r.try_get::<i64, _>(7)? != 0,
        },
        Protocol::Postgres => {
            // rows from before the TLS mode was stored meant the safe default
            let tls: Option<String> = r.try_get(9)?;
            TargetKind::Postgres {
                database: r.try_get(8)?,
                tls: TlsMode::parse(tls.as_deref().unwrap_or("verify-full"))
                    .map_err(StoreError::Corrupt)?,
                ca: r.try_get(10)?,
                kept_logins: r.try_get::<i64, _>(11)? != 0,
            }
        }
    };
    Ok(TargetRecord {
        name: r.try_get(0)?,
        environment: r.try_get(1)?,
        host: r.try_get(3)?,
        port: u16::try_from(port).map_err(|_| StoreError::Corrupt(format!("port {port}")))?,
        username: r.try_get(5)?,
        kind,
    })
}

impl Store {
    pub async fn add_target(&self, t: &NewTarget<'_>) -> Result<()> {
        let (host_key, tofu, database, tls, ca, kept_logins) = kind_columns(&t.kind);
        let sealed = self
            .master_key
            .seal(&credential_context(t.name), t.credential);
        let _turn = self.write_turn().await?;
        sqlx::query(
            "INSERT INTO targets (name, environment, protocol, host, port, username, credential, host_key, trust_on_first_use, created_at, database_name, tls_mode, tls_ca, kept_logins)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(t.name)
        .bind(t.environment)
        .bind(t.kind.protocol().as_str())
        .bind(t.host)
        .bind(i64::from(t.port))
        .bind(t.username)
        .bind(sealed)
        .bind(host_key)
        .bind(i64::from(tofu))
        .bind(now_millis())
        .bind(database)
        .bind(tls)
        .bind(ca)
        .bind(i64::from(kept_logins))
        .execute(&self.pool)
        .await
        .map_err(|e| insert_error(e, "target", t.name, Some(("environment", t.environment))))?;
        Ok(())
    }

    pub async fn target(&self, name: &str) -> Result<Option<TargetRecord>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM targets WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(target_from_row).transpose()
    }

    /// The target together with its environment's policy, in one read (a login's
    /// admission needs both before it can register the session).
    pub async fn target_with_policy(
        &self,
        name: &str,
    ) -> Result<Option<(TargetRecord, StoredPolicy)>> {
        // the statement, and the column the environment's part starts at
        static SQL: LazyLock<(String, usize)> = LazyLock::new(|| {
            let columns = |alias: &str, list: &str| {
                list.split(", ")
                    .map(|c| format!("{alias}.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let sql = format!(
                "SELECT {}, {} FROM targets t JOIN environments e ON e.name = t.environment WHERE t.name = $1",
                columns("t", TARGET_COLUMNS),
                columns("e", POLICY_COLUMNS),
            );
            (sql, TARGET_COLUMNS.split(", ").count())
        });
        let (sql, policy_at) = &*SQL;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let target = target_from_row(&r)?;
            let policy = policy_from_columns(&r, *policy_at)?;
            Ok((target, policy))
        })
        .transpose()
    }

    pub async fn list_targets(&self) -> Result<Vec<TargetRecord>> {
        let sql = format!("SELECT {TARGET_COLUMNS} FROM targets ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(target_from_row).collect()
    }

    /// The target's plaintext credential. Never log or display it.
    pub async fn target_credential(&self, name: &str) -> Result<Vec<u8>> {
        let row = self
            .row_by_key(
                "SELECT credential FROM targets WHERE name = $1".into(),
                name,
                "target",
            )
            .await?;
        let sealed: Vec<u8> = row.try_get(0)?;
        Ok(self.master_key.open(&credential_context(name), &sealed)?)
    }

    /// Pins `host_key` for a trust-on-first-use target that has none yet. Returns `false`
    /// when a key was already pinned (by a concurrent session), in which case the caller
    /// must compare against the stored one.
    pub async fn pin_host_key(&self, name: &str, host_key: &str) -> Result<bool> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE targets SET host_key = $1 WHERE name = $2 AND protocol = 'ssh' AND host_key IS NULL AND trust_on_first_use = 1",
        )
        .bind(host_key)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Removes a target. Its past sessions stay in the registry.
    pub async fn remove_target(&self, name: &str) -> Result<()> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("DELETE FROM targets WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        expect_row(done, "target", name)
    }
}
