//! The session registry: one row per brokered session, written at start and closed with
//! its end reason and byte counts.

use gatehouse_core::{EndReason, Protocol, WarnKind};
use sqlx::Row;

use crate::audit::{insert_audit_on, log_audit};
use crate::{AuditEvent, Result, Store, first_column, now_millis};

#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Display name of the node that holds the session.
    pub node: &'a str,
    /// Id of that node (unique; what kills, claims and takeovers go by).
    pub node_id: &'a str,
    pub operator: &'a str,
    pub target: &'a str,
    pub environment: Option<&'a str>,
    pub protocol: Protocol,
    pub client_addr: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub node: String,
    pub operator: String,
    pub target: String,
    pub environment: Option<String>,
    pub protocol: String,
    pub client_addr: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub bytes_in: i64,
    pub bytes_out: i64,
    pub recording_path: Option<String>,
    pub recording_state: Option<String>,
    /// Id of the node whose guard holds (held) the session.
    pub node_id: Option<String>,
    /// What the session's guard last reported through its node's heartbeat (`None`: no
    /// report, e.g. an ended session's node never ran one, or a node older than the
    /// columns). Kept out of `sessions --json`, which lists records, not live state.
    #[serde(skip)]
    pub guard: Option<GuardState>,
}

/// A live session's enforcement state as its guard knows it, wall-clock (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardState {
    /// The operator's last activity (the open, if none yet).
    pub last_activity_at: i64,
    /// Since when the session is locked at the prompt; `None`: not locked.
    pub locked_since: Option<i64>,
    /// The nearest enforcement deadline and its limit.
    pub next_limit: Option<(WarnKind, i64)>,
}

impl SessionRecord {
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end_reason.as_deref().map(EndReason::from_stored)
    }
}

pub(crate) const SESSION_COLUMNS: &str = "id, node, operator, target, environment, protocol, client_addr, started_at, ended_at, end_reason, bytes_in, bytes_out, recording_path, recording_state, node_id, last_activity_at, locked, locked_since, next_limit, next_limit_at";

pub(crate) fn session_from_row(r: &sqlx::any::AnyRow) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.try_get(0)?,
        node: r.try_get(1)?,
        operator: r.try_get(2)?,
        target: r.try_get(3)?,
        environment: r.try_get(4)?,
        protocol: r.try_get(5)?,
        client_addr: r.try_get(6)?,
        started_at: r.try_get(7)?,
        ended_at: r.try_get(8)?,
        end_reason: r.try_get(9)?,
        bytes_in: r.try_get(10)?,
        bytes_out: r.try_get(11)?,
        recording_path: r.try_get(12)?,
        recording_state: r.try_get(13)?,
        node_id: r.try_get(14)?,
        guard: guard_from_row(r, 15)?,
    })
}

/// The guard columns starting at `at`; `None` when no guard reported.
fn guard_from_row(r: &sqlx::any::AnyRow, at: usize) -> Result<Option<GuardState>> {
    let last_activity_at: Option<i64> = r.try_get(at)?;
    let locked: Option<i64> = r.try_get(at + 1)?;
    let (Some(last_activity_at), Some(locked)) = (last_activity_at, locked) else {
        return Ok(None);
    };
    let locked_since: Option<i64> = r.try_get(at + 2)?;
    let kind: Option<String> = r.try_get(at + 3)?;
    let next_at: Option<i64> = r.try_get(at + 4)?;
    Ok(Some(GuardState {
        last_activity_at,
        locked_since: if locked != 0 {
            Some(locked_since.unwrap_or(last_activity_at))
        } else {
            None
        },
        next_limit: kind.as_deref().and_then(WarnKind::parse).zip(next_at),
    }))
}

impl Store {
    /// Registers a new live session and returns its id (a UUIDv7: sortable by start time).
    pub async fn start_session(&self, s: &NewSession<'_>) -> Result<String> {
        self.start_session_audited(s, &[]).await
    }

    /// Registers a session together with its login's audit events (`(kind, detail)`, about
    /// the session's operator, from its client address) in one transaction: both or neither
    /// — a login is never on record without its session row, nor the reverse — and one
    /// commit instead of one per row, which is what a login storm waits on.
    pub async fn start_session_audited(
        &self,
        s: &NewSession<'_>,
        events: &[(&str, serde_json::Value)],
    ) -> Result<String> {
        let id = uuid::Uuid::now_v7().to_string();
        let now = now_millis();
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, node, operator, target, environment, protocol, client_addr, started_at, bytes_in, bytes_out, node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, $9)",
        )
        .bind(&id)
        .bind(s.node)
        .bind(s.operator)
        .bind(s.target)
        .bind(s.environment)
        .bind(s.protocol.as_str())
        .bind(s.client_addr)
        .bind(now)
        .bind(s.node_id)
        .execute(&mut *tx)
        .await?;
        let audits: Vec<AuditEvent<'_>> = events
            .iter()
            .map(|(kind, detail)| AuditEvent {
                kind,
                operator: Some(s.operator),
                session_id: Some(&id),
                source: Some(s.client_addr),
                detail: detail.clone(),
            })
            .collect();
        for e in &audits {
            insert_audit_on(&mut tx, now, e).await?;
        }
        tx.commit().await?;
        audits.iter().for_each(log_audit);
        Ok(id)
    }

    /// Closes a live session. A session already closed keeps its first end reason; returns
    /// whether it was closed here (false: closed already, e.g. by another node that
    /// declared this one lost).
    pub async fn end_session(
        &self,
        id: &str,
        reason: &EndReason,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Result<bool> {
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE sessions SET ended_at = $1, end_reason = $2, bytes_in = $3, bytes_out = $4
             WHERE id = $5 AND ended_at IS NULL",
        )
        .bind(now_millis())
        .bind(reason.to_stored())
        .bind(i64::try_from(bytes_in).unwrap_or(i64::MAX))
        .bind(i64::try_from(bytes_out).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes every session the node with id `node_id` left open (it died while they were
    /// live) as `interrupted`. Returns their ids.
    pub async fn close_interrupted_sessions(&self, node_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM sessions WHERE node_id = $1 AND ended_at IS NULL")
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        let ids = first_column(&rows)?;
        for id in &ids {
            let _turn = self.write_turn().await?;
            sqlx::query(
                "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL",
            )
            .bind(now_millis())
            .bind(EndReason::Interrupted.to_stored())
            .bind(id)
            .execute(&self.pool)
            .await?;
        }
        Ok(ids)
    }

    /// Newest first.
    pub async fn list_sessions(&self, limit: u32) -> Result<Vec<SessionRecord>> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY started_at DESC, id DESC LIMIT $1"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    pub async fn session(&self, id: &str) -> Result<SessionRecord> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        let row = self.row_by_key(sql, id, "session").await?;
        session_from_row(&row)
    }
}
