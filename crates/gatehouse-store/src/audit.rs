//! The audit log: one row per security-relevant event (auth success and failure, session
//! start and end, host-key pinning and mismatches, refused requests, admin actions).

use sqlx::Row;

use crate::{Result, Store, now_millis};

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
    pub async fn audit(&self, e: &AuditEvent<'_>) -> Result<()> {
        tracing::info!(
            target: "gatehouse::audit",
            kind = e.kind,
            operator = e.operator,
            session_id = e.session_id,
            source = e.source,
            detail = %e.detail,
            "audit event"
        );
        sqlx::query(
            "INSERT INTO audit_events (at, kind, operator, session_id, source, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_millis())
        .bind(e.kind)
        .bind(e.operator)
        .bind(e.session_id)
        .bind(e.source)
        .bind(e.detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
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
