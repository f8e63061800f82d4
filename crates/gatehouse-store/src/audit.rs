//! The audit log: one row per security-relevant event (auth success and failure, session
//! start and end, host-key pinning and mismatches, refused requests, admin actions).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;

use crate::{Result, Store, StoreError, now_millis};

/// Attempts at writing one audit event before it is counted as lost.
pub const AUDIT_ATTEMPTS: u32 = 4;
/// Wait before the first retry; each further retry waits four times longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// An event to record. `detail` is free-form JSON; never put a secret in it.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub kind: &'a str,
    pub operator: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub operator: Option<String>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub since_millis: Option<i64>,
    pub operator: Option<&'a str>,
    pub session_id: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// Events of sessions in this environment (and admin events naming it).
    pub environment: Option<&'a str>,
    pub limit: u32,
}

impl Store {
    /// Writes an audit event. The store handles failure itself, loudly: a failed insert is
    /// retried (up to [`AUDIT_ATTEMPTS`] times, 50/200/800 ms apart), the whole write is
    /// bounded by [`crate::Timeouts::audit`], and an event that still cannot be written is
    /// logged at error level with its full content (so it survives in the broker's log) and
    /// counted in [`Store::audit_failures`]. Callers that cannot do anything better with the
    /// error (most of them: the session must go on or end regardless) may therefore ignore
    /// it with `let _ =` — the event is never dropped silently.
    pub async fn audit(&self, e: &AuditEvent<'_>) -> Result<()> {
        log_audit(e);
        let at = now_millis();
        retrying(self.timeouts.audit, e.kind, || self.insert_audit(at, e))
            .await
            .map_err(|(error, attempts)| {
                lost(&self.audit_failures, at, e, attempts, &error);
                error
            })
    }

    /// Audit events that could not be written since this store was opened (for metrics).
    pub fn audit_failures(&self) -> u64 {
        self.audit_failures.load(Ordering::Relaxed)
    }

    async fn insert_audit(&self, at: i64, e: &AuditEvent<'_>) -> Result<()> {
        let _turn = self.write_turn().await?;
        let mut conn = self.pool.acquire().await?;
        insert_audit_on(&mut conn, at, e).await
    }

    /// Oldest first, within the filter.
    pub async fn list_audit(&self, f: &AuditFilter<'_>) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, at, kind, operator, session_id, source, detail FROM audit_events
             WHERE at >= $1
               AND ($2 = '' OR operator = $2)
               AND ($3 = '' OR session_id = $3)
               AND ($4 = '' OR kind = $4)
               AND ($6 = '' OR session_id IN (SELECT id FROM sessions WHERE environment = $6)
                    OR detail LIKE $7)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(f.since_millis.unwrap_or(0))
        .bind(f.operator.unwrap_or(""))
        .bind(f.session_id.unwrap_or(""))
        .bind(f.kind.unwrap_or(""))
        .bind(i64::from(if f.limit == 0 { 1000 } else { f.limit }))
        .bind(f.environment.unwrap_or(""))
        .bind(format!(
            "%\"environment\":\"{}\"%",
            f.environment.unwrap_or("")
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let detail: String = r.try_get(6)?;
                Ok(AuditRecord {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    operator: r.try_get(3)?,
                    session_id: r.try_get(4)?,
                    source: r.try_get(5)?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }
}

/// Runs the audit write `attempt` until it succeeds: up to [`AUDIT_ATTEMPTS`] times,
/// 50/200/800 ms apart, all within `limit`. The last error and the attempts made otherwise.
pub(crate) async fn retrying<F, Fut>(
    limit: Duration,
    what: &str,
    mut attempt: F,
) -> std::result::Result<(), (StoreError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut backoff = FIRST_BACKOFF;
    let mut made = 1;
    loop {
        let error = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => err,
            Err(_) => StoreError::Timeout(limit),
        };
        let out_of_time = tokio::time::Instant::now() + backoff >= deadline;
        if made >= AUDIT_ATTEMPTS || out_of_time {
            return Err((error, made));
        }
        tracing::warn!(what, attempt = made, error = %error, "audit write failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 4;
        made += 1;
    }
}

/// An audit event the store did not take: its whole content goes to the log at error level
/// (its only record now) and it is counted in `failures`.
pub(crate) fn lost(
    failures: &AtomicU64,
    at: i64,
    e: &AuditEvent<'_>,
    attempts: u32,
    error: &dyn std::fmt::Display,
) {
    let lost = failures.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(
        kind = e.kind,
        at,
        operator = e.operator,
        session_id = e.session_id,
        source = e.source,
        detail = %e.detail,
        attempts,
        error = %error,
        lost_total = lost,
        "AUDIT EVENT LOST: the store did not take it; this log line is its only record"
    );
}

/// Inserts `e` (at `at`, Unix ms) on `conn`: inside the caller's transaction when it has
/// one, so that the event is written together with what it tells of, or not at all.
pub(crate) async fn insert_audit_on(
    conn: &mut sqlx::AnyConnection,
    at: i64,
    e: &AuditEvent<'_>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, kind, operator, session_id, source, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(at)
    .bind(e.kind)
    .bind(e.operator)
    .bind(e.session_id)
    .bind(e.source)
    .bind(e.detail.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// The audit event's log line (target `gatehouse::audit`): written when the event is
/// (for a transaction, once it committed).
pub(crate) fn log_audit(e: &AuditEvent<'_>) {
    tracing::info!(
        target: "gatehouse::audit",
        kind = e.kind,
        operator = e.operator,
        session_id = e.session_id,
        source = e.source,
        detail = %e.detail,
        "audit event"
    );
}
