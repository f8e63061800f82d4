//! What the detective control reads from the store (sessions with their kill requests and
//! ownership stamps, operator lock history from the audit log, violations already
//! reported) and the lock that lets one node at a time run it.

use gatehouse_core::detective::{KillFact, LockChange};
use sqlx::Row;

use crate::policies::LOCKED_MARK;
use crate::sessions::{SESSION_COLUMNS, session_from_row};
use crate::{Backend, Result, SessionRecord, Store};

/// A session row with what the detective needs besides the registry's public columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSession {
    pub record: SessionRecord,
    pub kill: Option<KillFact>,
    pub owner_seen_at: Option<i64>,
}

/// Live sessions and those ended at or after `$1`. Each pass runs this and the two below: each
/// reads by index (migration 0018; `tests`), never the whole registry or audit log. No
/// ORDER BY: SQLite would walk the `started_at` index through every row to give it.
fn sessions_sql() -> String {
    format!(
        "SELECT {SESSION_COLUMNS}, kill_requested_at, kill_reason, owner_seen_at FROM sessions
         WHERE ended_at IS NULL OR ended_at >= $1"
    )
}

const LOCK_CHANGES_SQL: &str = "SELECT at, kind, detail FROM audit_events
     WHERE kind = 'user_locked' OR kind = 'user_unlocked' ORDER BY at, id";

const REPORTED_SQL: &str =
    "SELECT session_id, detail FROM audit_events WHERE kind = 'violation' AND at >= $1";

/// The advisory lock key of the detective control on PostgreSQL ("gatedete").
const DETECTIVE_LOCK_KEY: i64 = 0x6761_7465_6465_7465;

/// Held while this node runs the detective control. On PostgreSQL a session-level advisory
/// lock on a connection of its own (taken out of the pool, so it is never handed to other
/// queries and dies with the connection); on SQLite, one node by construction.
pub struct DetectiveLock {
    conn: Option<sqlx::AnyConnection>,
}

impl DetectiveLock {
    /// Whether the lock is still held (its connection still answers).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
        }
    }
}

impl Store {
    /// Live sessions, and those that ended at or after `since` (Unix ms), oldest first.
    pub async fn detective_sessions(&self, since: i64) -> Result<Vec<CheckedSession>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sessions_sql()))
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let n = SESSION_COLUMNS.split(',').count();
        let mut sessions = rows
            .iter()
            .map(|r| {
                let kill_at: Option<i64> = r.try_get(n)?;
                let kill_reason: Option<String> = r.try_get(n + 1)?;
                Ok(CheckedSession {
                    record: session_from_row(r)?,
                    kill: kill_at.map(|at| KillFact {
                        at,
                        user_lock: kill_reason.as_deref() == Some(LOCKED_MARK),
                    }),
                    owner_seen_at: r.try_get(n + 2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        sessions.sort_by(|a, b| {
            (a.record.started_at, &a.record.id).cmp(&(b.record.started_at, &b.record.id))
        });
        Ok(sessions)
    }

    /// Every lock and unlock of an operator an admin made, from the audit log, oldest first.
    pub async fn operator_lock_changes(&self) -> Result<Vec<LockChange>> {
        let rows = sqlx::query(LOCK_CHANGES_SQL).fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for r in &rows {
            let detail: String = r.try_get(2)?;
            let Some(operator) = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|d| d["user"].as_str().map(str::to_owned))
            else {
                continue;
            };
            out.push(LockChange {
                operator,
                at: r.try_get(0)?,
                locked: r.try_get::<String, _>(1)? == "user_locked",
            });
        }
        Ok(out)
    }

    /// `(rule, session id)` of every `violation` audit event since `since` (Unix ms): what
    /// has been reported already.
    pub async fn reported_violations(&self, since: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(REPORTED_SQL)
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let session: Option<String> = r.try_get(0)?;
            let detail: String = r.try_get(1)?;
            let rule = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|d| d["rule"].as_str().map(str::to_owned));
            if let (Some(s), Some(rule)) = (session, rule) {
                out.push((rule, s));
            }
        }
        Ok(out)
    }

    /// Takes the detective control's lock if no other node holds it.
    pub async fn try_detective_lock(&self) -> Result<Option<DetectiveLock>> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(DetectiveLock { conn: None }));
        }
        let mut conn = self.pool.acquire().await?.detach();
        let row = sqlx::query(
            "SELECT CAST(CASE WHEN pg_try_advisory_lock($1) THEN 1 ELSE 0 END AS BIGINT)",
        )
        .bind(DETECTIVE_LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
        Ok((row.try_get::<i64, _>(0)? == 1).then_some(DetectiveLock { conn: Some(conn) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql` (with `params` bound to 0), one line per step.
    async fn plan(store: &Store, sql: &str, params: usize) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(explain));
        for _ in 0..params {
            q = q.bind(0_i64);
        }
        q.fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get::<String, _>(3).unwrap())
            .collect()
    }

    /// The detective runs these every pass (and each node's watcher the last, twice a
    /// second): none may walk the whole session registry or
    /// audit log (both grow with the node's history; before migration 0018 and without the
    /// ORDER BY, the sessions' and each audit read did). Scanning the partial index of live
    /// sessions is walking what is live, which is the point.
    #[tokio::test]
    async fn the_detective_reads_by_index_not_the_whole_history() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        let store = Store::open(&url, crate::MasterKey::generate())
            .await
            .unwrap();
        for (sql, params) in [
            (sessions_sql(), 1),
            (LOCK_CHANGES_SQL.to_owned(), 0),
            (REPORTED_SQL.to_owned(), 1),
            (crate::recordings::recordings_of_sql(3), 3),
            (crate::policies::PENDING_KILLS_SQL.to_owned(), 1),
        ] {
            let plan = plan(&store, &sql, params).await;
            let walks = plan
                .iter()
                .any(|step| step.starts_with("SCAN ") && !step.contains("sessions_live_node_id"));
            assert!(!walks, "{sql}\nwalks a whole table: {plan:#?}");
        }
    }
}
