//! Broker nodes' heartbeats: each serving node writes its row every few seconds and stamps
//! the live sessions its guards hold, so that a node that is gone, and a live session no
//! guard holds, show in the store (the detective control reads both).

use gatehouse_core::detective::NodeFact;
use sqlx::Row;

use crate::{GuardState, Result, Store, now_millis};

/// Session ids stamped per statement (bounded statement size, any number of sessions).
const STAMP_CHUNK: usize = 500;

impl Store {
    /// Records that `node` (started at `started_at`, running `version`) is alive and holds
    /// the live sessions `held`, and what their guards know (`guards`, by session id: the
    /// review list's idle, next limit and lock columns), all in one batch.
    pub async fn node_heartbeat(
        &self,
        node: &str,
        started_at: i64,
        version: &str,
        held: &[String],
        guards: &[(String, GuardState)],
    ) -> Result<()> {
        let now = now_millis();
        let live = i64::try_from(held.len()).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE nodes SET started_at = $1, heartbeat_at = $2, stopped_at = NULL,
                 live_sessions = $3, version = $4 WHERE name = $5",
        )
        .bind(started_at)
        .bind(now)
        .bind(live)
        .bind(version)
        .bind(node)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO nodes (name, started_at, heartbeat_at, live_sessions, version)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(node)
            .bind(started_at)
            .bind(now)
            .bind(live)
            .bind(version)
            .execute(&self.pool)
            .await?;
        }
        for chunk in held.chunks(STAMP_CHUNK) {
            let placeholders = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE sessions SET owner_seen_at = $1
                 WHERE node = $2 AND ended_at IS NULL AND id IN ({placeholders})"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(node);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&self.pool).await?;
        }
        if !guards.is_empty() {
            // one transaction: one commit for the whole batch
            let mut tx = self.pool.begin().await?;
            for (id, g) in guards {
                sqlx::query(
                    "UPDATE sessions SET last_activity_at = $1, locked = $2, locked_since = $3,
                         next_limit = $4, next_limit_at = $5
                     WHERE id = $6 AND node = $7 AND ended_at IS NULL",
                )
                .bind(g.last_activity_at)
                .bind(i64::from(g.locked_since.is_some()))
                .bind(g.locked_since)
                .bind(g.next_limit.map(|(k, _)| k.as_str()))
                .bind(g.next_limit.map(|(_, at)| at))
                .bind(id)
                .bind(node)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Records that `node` stopped serving (graceful shutdown).
    pub async fn node_stopped(&self, node: &str) -> Result<()> {
        sqlx::query("UPDATE nodes SET stopped_at = $1, live_sessions = 0 WHERE name = $2")
            .bind(now_millis())
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeFact>> {
        let rows = sqlx::query(
            "SELECT name, started_at, heartbeat_at, stopped_at FROM nodes ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeFact {
                    name: r.try_get(0)?,
                    started_at: r.try_get(1)?,
                    heartbeat_at: r.try_get(2)?,
                    stopped: r.try_get::<Option<i64>, _>(3)?.is_some(),
                })
            })
            .collect()
    }
}
