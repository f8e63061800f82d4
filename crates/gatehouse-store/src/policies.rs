//! Environment policies, admin kill requests and operator locks: what an admin changes and
//! live sessions must obey. Each policy change bumps `policy_version`, which brokers watch,
//! and is kept in `policy_history` with the time it came into force.

use std::time::Duration;

use gatehouse_core::detective::PolicyVersion;
use gatehouse_core::{EnvPolicy, IdleAction};
use sqlx::Row;

use crate::notify::Change;
use crate::{AuditEvent, Result, Store, StoreError, expect_row, first_column, now_millis};

fn ms(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn dur(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(m.max(0) as u64))
}

/// Who asked for an admin action, for its audit event: a person (the OS user running the
/// command, or the name a reviewer gave) and the tool (`admin-cli`, `review`).
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub name: &'a str,
    pub via: &'a str,
}

/// An environment's policy as stored, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub environment: String,
    pub policy: EnvPolicy,
    pub version: i64,
    /// PostgreSQL statement logs of the environment keep bind parameters as `<redacted>`
    /// (set apart from the policy's version: it applies to sessions that start later).
    pub redact_params: bool,
}

pub(crate) const POLICY_COLUMNS: &str = "name, idle_timeout_ms, max_session_ms, warn_before_ms, idle_action, lock_grace_ms, reauth_after_ms, policy_version, redact_params";

fn policy_from_row(r: &sqlx::any::AnyRow) -> Result<StoredPolicy> {
    policy_from_columns(r, 0)
}

/// The policy in `POLICY_COLUMNS` order from column `at` on (a row that joins the
/// environment to another table's columns).
pub(crate) fn policy_from_columns(r: &sqlx::any::AnyRow, at: usize) -> Result<StoredPolicy> {
    let warn: String = r.try_get(at + 3)?;
    let warn_before = warn
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| StoreError::Corrupt(format!("warn_before_ms '{warn}'")))
        })
        .collect::<Result<Vec<_>>>()?;
    let action: String = r.try_get(at + 4)?;
    Ok(StoredPolicy {
        environment: r.try_get(at)?,
        policy: EnvPolicy {
            idle_timeout: dur(r.try_get(at + 1)?),
            max_session: dur(r.try_get(at + 2)?),
            warn_before,
            idle_action: IdleAction::parse(&action)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            lock_grace: dur(Some(r.try_get(at + 5)?)).unwrap_or_default(),
            reauth_after: dur(r.try_get(at + 6)?),
        },
        version: r.try_get(at + 7)?,
        redact_params: r.try_get::<i64, _>(at + 8)? != 0,
    })
}

impl Store {
    pub async fn environment_policy(&self, environment: &str) -> Result<StoredPolicy> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM environments WHERE name = $1");
        let row = self.row_by_key(sql, environment, "environment").await?;
        policy_from_row(&row)
    }

    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM environments ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy_from_row).collect()
    }

    /// Replaces an environment's policy (already validated) and bumps its version.
    pub async fn set_environment_policy(&self, environment: &str, p: &EnvPolicy) -> Result<()> {
        let warn = p
            .warn_before
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE environments SET idle_timeout_ms = $1, max_session_ms = $2, warn_before_ms = $3,
                 idle_action = $4, lock_grace_ms = $5, reauth_after_ms = $6,
                 policy_version = policy_version + 1
             WHERE name = $7",
        )
        .bind(ms(p.idle_timeout))
        .bind(ms(p.max_session))
        .bind(warn)
        .bind(p.idle_action.as_str())
        .bind(ms(Some(p.lock_grace)))
        .bind(ms(p.reauth_after))
        .bind(environment)
        .execute(&mut *tx)
        .await?;
        expect_row(done, "environment", environment)?;
        record_policy_version(&mut tx, environment, now_millis()).await?;
        self.notify_change(&mut tx, Change::Policy).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every version of every environment's policy, with when it came into force: what the
    /// detective control judges past sessions by.
    pub async fn policy_history(&self) -> Result<Vec<PolicyVersion>> {
        let rows = sqlx::query(
            "SELECT environment, idle_timeout_ms, max_session_ms, warn_before_ms, idle_action,
                 lock_grace_ms, reauth_after_ms, version, valid_from
             FROM policy_history ORDER BY environment, valid_from, version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let stored = policy_from_row(r)?;
                Ok(PolicyVersion {
                    environment: stored.environment,
                    version: stored.version,
                    valid_from: r.try_get(8)?,
                    policy: stored.policy,
                })
            })
            .collect()
    }

    /// Asks the broker that owns a live session to end it.
    pub async fn request_kill(&self, session_id: &str, reason: &str) -> Result<()> {
        let _turn = self.write_turn().await?;
        let mut conn = self.pool.acquire().await?;
        let done = sqlx::query(
            "UPDATE sessions SET kill_requested_at = $1, kill_reason = $2
             WHERE id = $3 AND ended_at IS NULL",
        )
        .bind(now_millis())
        .bind(KillRequest::Admin(reason.to_owned()).to_stored())
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
        expect_row(done, "live session", session_id)?;
        self.notify_change(&mut conn, Change::Kill).await
    }

    /// Locks (or unlocks) an operator. Locking also asks for every live session of the
    /// operator to end; returns their ids.
    pub async fn set_operator_locked(&self, operator: &str, locked: bool) -> Result<Vec<String>> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("UPDATE operators SET locked = $1 WHERE name = $2")
            .bind(i64::from(locked))
            .bind(operator)
            .execute(&self.pool)
            .await?;
        expect_row(done, "user", operator)?;
        if !locked {
            let mut conn = self.pool.acquire().await?;
            self.notify_change(&mut conn, Change::UserLock).await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query("SELECT id FROM sessions WHERE operator = $1 AND ended_at IS NULL")
            .bind(operator)
            .fetch_all(&self.pool)
            .await?;
        let ids = first_column(&rows)?;
        sqlx::query(
            "UPDATE sessions SET kill_requested_at = $1, kill_reason = $2
             WHERE operator = $3 AND ended_at IS NULL",
        )
        .bind(now_millis())
        .bind(KillRequest::OperatorLocked.to_stored())
        .bind(operator)
        .execute(&self.pool)
        .await?;
        let mut conn = self.pool.acquire().await?;
        self.notify_change(&mut conn, Change::UserLock).await?;
        Ok(ids)
    }

    /// `gatehouse sessions kill` and the review TUI's `K`: asks the session's node to end
    /// it with `reason` (which the operator sees) and audits who asked.
    pub async fn kill_session_by(
        &self,
        session_id: &str,
        reason: &str,
        by: &Actor<'_>,
    ) -> Result<()> {
        self.request_kill(session_id, reason).await?;
        self.audit(&AuditEvent {
            kind: "session_kill_requested",
            operator: None,
            session_id: None,
            source: Some(by.via),
            detail: serde_json::json!({"session": session_id, "reason": reason, "by": by.name}),
        })
        .await
    }

    /// `gatehouse user lock` and the review TUI's `L`: locks the operator, which ends their
    /// live sessions (returned), and audits who asked.
    pub async fn lock_operator_by(&self, operator: &str, by: &Actor<'_>) -> Result<Vec<String>> {
        let ended = self.set_operator_locked(operator, true).await?;
        self.audit(&AuditEvent {
            kind: "user_locked",
            operator: None,
            session_id: None,
            source: Some(by.via),
            detail: serde_json::json!({"user": operator, "sessions_ended": ended, "by": by.name}),
        })
        .await?;
        Ok(ended)
    }

    /// Live sessions of the node with id `node_id` that an admin asked to end.
    pub async fn pending_kills(&self, node_id: &str) -> Result<Vec<(String, KillRequest)>> {
        let rows = sqlx::query(PENDING_KILLS_SQL)
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let stored = r.try_get::<Option<String>, _>(1)?.unwrap_or_default();
                Ok((r.try_get(0)?, KillRequest::from_stored(&stored)))
            })
            .collect()
    }
}

/// Kill requests not yet carried out for the live sessions of node `$1` (every node's
/// watcher, twice a second).
pub(crate) const PENDING_KILLS_SQL: &str = "SELECT id, kill_reason FROM sessions
     WHERE node_id = $1 AND ended_at IS NULL AND kill_requested_at IS NOT NULL";

/// Copies an environment's policy as it is now into the history, in force from `at`.
pub(crate) async fn record_policy_version(
    conn: &mut sqlx::AnyConnection,
    environment: &str,
    at: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO policy_history (environment, version, valid_from, idle_timeout_ms,
             max_session_ms, warn_before_ms, idle_action, lock_grace_ms, reauth_after_ms)
         SELECT name, policy_version, $1, idle_timeout_ms, max_session_ms, warn_before_ms,
             idle_action, lock_grace_ms, reauth_after_ms
         FROM environments WHERE name = $2",
    )
    .bind(at)
    .bind(environment)
    .execute(conn)
    .await?;
    Ok(())
}

/// Why an admin asked for a session to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillRequest {
    /// `gatehouse sessions kill`, with the admin's reason (may be empty).
    Admin(String),
    /// `gatehouse user lock`.
    OperatorLocked,
}

pub(crate) const LOCKED_MARK: &str = "locked";
const ADMIN_PREFIX: &str = "admin:";

impl KillRequest {
    fn to_stored(&self) -> String {
        match self {
            KillRequest::Admin(why) => format!("{ADMIN_PREFIX}{why}"),
            KillRequest::OperatorLocked => LOCKED_MARK.to_owned(),
        }
    }

    fn from_stored(s: &str) -> KillRequest {
        match s.strip_prefix(ADMIN_PREFIX) {
            Some(why) => KillRequest::Admin(why.to_owned()),
            None if s == LOCKED_MARK => KillRequest::OperatorLocked,
            None => KillRequest::Admin(s.to_owned()),
        }
    }
}

impl Store {
    /// SSH subsystems other than sftp the environment allows (their bytes are recorded
    /// raw); empty: none.
    pub async fn allowed_subsystems(&self, environment: &str) -> Result<Vec<String>> {
        let row = self
            .row_by_key(
                "SELECT ssh_subsystems FROM environments WHERE name = $1".into(),
                environment,
                "environment",
            )
            .await?;
        let list: String = row.try_get(0)?;
        Ok(list
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    pub async fn set_allowed_subsystems(&self, environment: &str, names: &[String]) -> Result<()> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("UPDATE environments SET ssh_subsystems = $1 WHERE name = $2")
            .bind(names.join(","))
            .bind(environment)
            .execute(&self.pool)
            .await?;
        expect_row(done, "environment", environment)
    }

    pub async fn set_redact_params(&self, environment: &str, redact: bool) -> Result<()> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query("UPDATE environments SET redact_params = $1 WHERE name = $2")
            .bind(i64::from(redact))
            .bind(environment)
            .execute(&self.pool)
            .await?;
        expect_row(done, "environment", environment)
    }
}
