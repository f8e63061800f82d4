//! Broker nodes' heartbeats: each serving node writes its row (keyed by the id it keeps
//! beside its host key) every few seconds and stamps the live sessions its guards hold, so
//! that a node that is gone, and a live session no guard holds, show in the store (the
//! detective control reads both). A live node closes the sessions of a node silent past the
//! node timeout (`take_over_lost_nodes`).

use gatehouse_core::EndReason;
use gatehouse_core::detective::NodeFact;
use sqlx::Row;

use crate::audit::{insert_audit_on, log_audit};
use crate::{
    AuditEvent, GuardState, IDS_PER_STATEMENT, Result, Store, first_column, now_millis,
    placeholders,
};

/// What a node says about itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Generated once, kept beside the host key: unique in a fleet.
    pub id: String,
    /// Display name (`[node] name`); several nodes may share one.
    pub name: String,
    pub version: String,
    /// When the node started (Unix ms).
    pub started_at: i64,
    /// Where it listens, e.g. `ssh 10.0.0.5:2222, postgres 10.0.0.5:6432`.
    pub listen: String,
}

/// A node's row, for `gatehouse nodes list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeRecord {
    pub id: String,
    pub name: String,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub stopped_at: Option<i64>,
    pub live_sessions: i64,
    pub listen: String,
    /// When another node declared it lost and closed its sessions.
    pub lost_at: Option<i64>,
}

/// Who closes a session no guard holds ([`Store::close_unguarded`]).
#[derive(Debug, Clone, Copy)]
pub enum Closer<'a> {
    /// The fleet takeover by node `me`: only while the session's node (`node_id`, `node`)
    /// has sent no heartbeat since `cutoff` (Unix ms).
    Takeover {
        me: &'a str,
        cutoff: i64,
        node_id: &'a str,
        node: &'a str,
    },
    /// The detective control (`action = "end"`), for the finding `rule`.
    Detective { rule: &'a str },
}

/// A session closed because its node went silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostSession {
    pub session_id: String,
    pub operator: String,
    pub node_id: String,
    pub node: String,
}

impl Store {
    /// Records that `node` is alive with `live` sessions and holds the live sessions `held`
    /// (all of them or a share: each claim stamps the row's `owner_seen_at`), and what
    /// their guards know (`guards`, by session id: the review list's idle, next limit and
    /// lock columns). Returns those of `held` whose rows are closed already (another node
    /// declared this one lost and took them over): their guards must end.
    pub async fn node_heartbeat(
        &self,
        node: &NodeInfo,
        live: usize,
        held: &[String],
        guards: &[(String, GuardState)],
    ) -> Result<Vec<String>> {
        let now = now_millis();
        let live = i64::try_from(live).unwrap_or(i64::MAX);
        // one turn for the node's whole heartbeat (its writes and the reads between them)
        let _turn = self.write_turn().await?;
        let done = sqlx::query(
            "UPDATE nodes SET name = $1, started_at = $2, heartbeat_at = $3, stopped_at = NULL,
                 live_sessions = $4, version = $5, listen = $6, lost_at = NULL WHERE id = $7",
        )
        .bind(&node.name)
        .bind(node.started_at)
        .bind(now)
        .bind(live)
        .bind(&node.version)
        .bind(&node.listen)
        .bind(&node.id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO nodes (id, name, started_at, heartbeat_at, live_sessions, version, listen)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&node.id)
            .bind(&node.name)
            .bind(node.started_at)
            .bind(now)
            .bind(live)
            .bind(&node.version)
            .bind(&node.listen)
            .execute(&self.pool)
            .await?;
        }
        let mut closed = Vec::new();
        for chunk in held.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE sessions SET owner_seen_at = $1
                 WHERE node_id = $2 AND ended_at IS NULL AND id IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(&node.id);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&self.pool).await?;
            let sql = format!(
                "SELECT id FROM sessions WHERE ended_at IS NOT NULL AND id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            closed.extend(first_column(&q.fetch_all(&self.pool).await?)?);
        }
        if !guards.is_empty() {
            // one transaction: one commit for the whole batch (in the turn taken above)
            let mut tx = self.pool.begin().await?;
            for (id, g) in guards {
                sqlx::query(
                    "UPDATE sessions SET last_activity_at = $1, locked = $2, locked_since = $3,
                         next_limit = $4, next_limit_at = $5
                     WHERE id = $6 AND node_id = $7 AND ended_at IS NULL",
                )
                .bind(g.last_activity_at)
                .bind(i64::from(g.locked_since.is_some()))
                .bind(g.locked_since)
                .bind(g.next_limit.map(|(k, _)| k.as_str()))
                .bind(g.next_limit.map(|(_, at)| at))
                .bind(id)
                .bind(&node.id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(closed)
    }

    /// Records that the node with id `node_id` stopped serving (graceful shutdown).
    pub async fn node_stopped(&self, node_id: &str) -> Result<()> {
        let _turn = self.write_turn().await?;
        sqlx::query("UPDATE nodes SET stopped_at = $1, live_sessions = 0 WHERE id = $2")
            .bind(now_millis())
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes as `interrupted` the live sessions of every node other than `me` whose last
    /// heartbeat is older than `cutoff` (Unix ms) (a row whose node never sent a heartbeat is
    /// left to the detective control, which reports it). Each session is taken over in one
    /// transaction: its row closed, its recording marked interrupted (verified to its last
    /// authentic checkpoint) and a `session_closed` audit event — all or nothing, so a
    /// node that dies half-way leaves nothing half done for the next pass. The close
    /// re-checks that the node is still silent, so several live nodes may run this at once
    /// and a node that just came back keeps its sessions. A node is marked lost (with a
    /// `node_lost` audit event, in the same transaction) once. `me` is named in the audit
    /// events. Returns the sessions closed here, and the nodes newly declared lost (id,
    /// name).
    pub async fn take_over_lost_nodes(
        &self,
        me: &str,
        cutoff: i64,
    ) -> Result<(Vec<LostSession>, Vec<(String, String)>)> {
        let timeout_ms = now_millis().saturating_sub(cutoff);
        let rows = sqlx::query(
            "SELECT s.id, s.operator, s.node_id, s.node FROM sessions s
             JOIN nodes n ON n.id = s.node_id
             WHERE s.ended_at IS NULL AND s.node_id <> $1 AND n.heartbeat_at < $2",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let mut closed = Vec::new();
        for r in &rows {
            let s = LostSession {
                session_id: r.try_get(0)?,
                operator: r.try_get(1)?,
                node_id: r.try_get(2)?,
                node: r.try_get(3)?,
            };
            let closer = Closer::Takeover {
                me,
                cutoff,
                node_id: &s.node_id,
                node: &s.node,
            };
            if self
                .close_unguarded(&s.session_id, &s.operator, &closer)
                .await?
            {
                closed.push(s);
            }
        }
        let mut nodes: Vec<(String, String)> = closed
            .iter()
            .map(|s| (s.node_id.clone(), s.node.clone()))
            .collect();
        nodes.sort();
        nodes.dedup();
        let mut newly_lost = Vec::new();
        for (id, name) in nodes {
            let detail = serde_json::json!({"node_id": id, "node": name, "timeout_ms": timeout_ms, "by": me});
            let _turn = self.write_turn().await?;
            let mut tx = self.pool.begin().await?;
            let done = sqlx::query(
                "UPDATE nodes SET lost_at = $1 WHERE id = $2 AND lost_at IS NULL AND heartbeat_at < $3",
            )
            .bind(now_millis())
            .bind(&id)
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                let e = fleet_audit("node_lost", None, None, detail);
                insert_audit_on(&mut tx, now_millis(), &e).await?;
                tx.commit().await?;
                log_audit(&e);
                newly_lost.push((id, name));
            }
        }
        Ok((closed, newly_lost))
    }

    /// Closes as `interrupted` a live session no guard holds, in one transaction: the row
    /// (for a takeover, only while its node is still silent), its recording marked
    /// interrupted from its last authentic checkpoint, and a `session_closed` audit event
    /// naming who closed it — all or nothing. Whether the row was closed here (false: it
    /// was already closed, or its node came back).
    pub async fn close_unguarded(
        &self,
        session_id: &str,
        operator: &str,
        closer: &Closer<'_>,
    ) -> Result<bool> {
        let recording = self.interrupted_recording(session_id).await?;
        // the detective closes regardless of heartbeats: no heartbeat is at or after i64::MAX
        let (detail, source, silent_since) = match *closer {
            Closer::Takeover {
                me,
                cutoff,
                node_id,
                node,
            } => (
                serde_json::json!({"reason": "interrupted", "node_lost": node_id, "node": node, "by": me}),
                "fleet",
                cutoff,
            ),
            Closer::Detective { rule } => (
                serde_json::json!({"reason": "interrupted", "rule": rule}),
                "detective",
                i64::MAX,
            ),
        };
        let _turn = self.write_turn().await?;
        let mut tx = self.pool.begin().await?;
        let closed = sqlx::query(
            "UPDATE sessions SET ended_at = $1, end_reason = $2
             WHERE id = $3 AND ended_at IS NULL AND NOT EXISTS
                 (SELECT 1 FROM nodes n WHERE n.id = sessions.node_id AND n.heartbeat_at >= $4)",
        )
        .bind(now_millis())
        .bind(EndReason::Interrupted.to_stored())
        .bind(session_id)
        .bind(silent_since)
        .execute(&mut *tx)
        .await?;
        if closed.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(t) = recording {
            // written only if the recording is still live (its node may have sealed it
            // between the read and now: then the sealed state stays)
            t.apply(&mut tx).await?;
        }
        let e = AuditEvent {
            kind: "session_closed",
            operator: Some(operator),
            session_id: Some(session_id),
            source: Some(source),
            detail,
        };
        insert_audit_on(&mut tx, now_millis(), &e).await?;
        tx.commit().await?;
        log_audit(&e);
        Ok(true)
    }

    /// Every node's heartbeat, for the detective control.
    pub async fn list_nodes(&self) -> Result<Vec<NodeFact>> {
        Ok(self
            .node_records()
            .await?
            .into_iter()
            .map(|n| NodeFact {
                id: n.id,
                name: n.name,
                started_at: n.started_at,
                heartbeat_at: n.heartbeat_at,
                stopped: n.stopped_at.is_some(),
            })
            .collect())
    }

    /// Every node's row, by name then id.
    pub async fn node_records(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, version, started_at, heartbeat_at, stopped_at, live_sessions,
                 listen, lost_at
             FROM nodes ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRecord {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    version: r.try_get(2)?,
                    started_at: r.try_get(3)?,
                    heartbeat_at: r.try_get(4)?,
                    stopped_at: r.try_get(5)?,
                    live_sessions: r.try_get(6)?,
                    listen: r.try_get(7)?,
                    lost_at: r.try_get(8)?,
                })
            })
            .collect()
    }
}

fn fleet_audit<'a>(
    kind: &'a str,
    operator: Option<&'a str>,
    session_id: Option<&'a str>,
    detail: serde_json::Value,
) -> AuditEvent<'a> {
    AuditEvent {
        kind,
        operator,
        session_id,
        source: Some("fleet"),
        detail,
    }
}
