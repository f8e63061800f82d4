//! Where each session's recording is and what it must hash to. The final digest is stored
//! with a MAC under the node's master key, so rewriting a recording *and* its row needs the
//! key as well.

use sqlx::Row;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingState {
    Recording,
    Sealed,
    Interrupted,
    Failed,
    /// Removed by retention.
    Pruned,
}

impl RecordingState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Recording => "recording",
            RecordingState::Sealed => "sealed",
            RecordingState::Interrupted => "interrupted",
            RecordingState::Failed => "failed",
            RecordingState::Pruned => "pruned",
        }
    }

    fn parse(s: &str) -> Result<RecordingState> {
        Ok(match s {
            "recording" => RecordingState::Recording,
            "sealed" => RecordingState::Sealed,
            "interrupted" => RecordingState::Interrupted,
            "failed" => RecordingState::Failed,
            "pruned" => RecordingState::Pruned,
            other => return Err(StoreError::Corrupt(format!("recording state '{other}'"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    pub session_id: String,
    pub path: String,
    pub state: RecordingState,
    pub size: Option<i64>,
    pub events: Option<i64>,
    pub digest: Option<String>,
    /// Whether the stored MAC matches the stored digest (always false unless sealed).
    pub authentic: bool,
    pub started_at: i64,
}

fn mac_context(session_id: &str) -> String {
    format!("gatehouse recording:{session_id}")
}

fn mac_data(events: i64, digest: &str) -> Vec<u8> {
    format!("{events}:{digest}").into_bytes()
}

impl Store {
    pub async fn recording_started(&self, session_id: &str, path: &str) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET recording_path = $1, recording_state = 'recording' WHERE id = $2",
        )
        .bind(path)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn recording_sealed(
        &self,
        session_id: &str,
        size: u64,
        events: u64,
        digest: &str,
    ) -> Result<()> {
        let events = i64::try_from(events).unwrap_or(i64::MAX);
        let mac = self
            .master_key
            .mac(&mac_context(session_id), &mac_data(events, digest));
        sqlx::query(
            "UPDATE sessions SET recording_state = 'sealed', recording_size = $1, recording_events = $2,
                 recording_digest = $3, recording_mac = $4 WHERE id = $5",
        )
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(events)
        .bind(digest)
        .bind(mac)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn recording_failed(&self, session_id: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET recording_state = 'failed' WHERE id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks this node's recordings still being written as interrupted (after a crash).
    pub async fn interrupt_recordings(&self, node: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET recording_state = 'interrupted'
             WHERE node = $1 AND recording_state = 'recording' AND ended_at IS NOT NULL",
        )
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    const RECORDING_COLUMNS: &str = "id, recording_path, recording_state, recording_size, recording_events, recording_digest, recording_mac, started_at";

    fn recording_from_row(&self, r: &sqlx::any::AnyRow) -> Result<RecordingRecord> {
        let session_id: String = r.try_get(0)?;
        let state: String = r.try_get(2)?;
        let events: Option<i64> = r.try_get(4)?;
        let digest: Option<String> = r.try_get(5)?;
        let mac: Option<String> = r.try_get(6)?;
        let authentic = match (events, &digest, &mac) {
            (Some(e), Some(d), Some(m)) => {
                // compare MACs without early exit
                let expected = self
                    .master_key
                    .mac(&mac_context(&session_id), &mac_data(e, d));
                expected.len() == m.len()
                    && expected
                        .bytes()
                        .zip(m.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            }
            _ => false,
        };
        Ok(RecordingRecord {
            path: r.try_get(1)?,
            state: RecordingState::parse(&state)?,
            size: r.try_get(3)?,
            events,
            digest,
            authentic,
            started_at: r.try_get(7)?,
            session_id,
        })
    }

    pub async fn recording(&self, session_id: &str) -> Result<RecordingRecord> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE id = $1 AND recording_path IS NOT NULL",
            Self::RECORDING_COLUMNS
        );
        let row = self
            .row_by_key(sql, session_id, "recording of session")
            .await?;
        self.recording_from_row(&row)
    }

    /// Every recording, oldest first; with `older_than` (Unix ms) only those started before.
    pub async fn list_recordings(&self, older_than: Option<i64>) -> Result<Vec<RecordingRecord>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE recording_path IS NOT NULL AND started_at < $1 ORDER BY started_at",
            Self::RECORDING_COLUMNS
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(older_than.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.recording_from_row(r)).collect()
    }

    /// Marks a recording whose files were removed by retention.
    pub async fn recording_pruned(&self, session_id: &str) -> Result<()> {
        sqlx::query(
            "UPDATE sessions SET recording_state = 'pruned', recording_path = NULL WHERE id = $1",
        )
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
