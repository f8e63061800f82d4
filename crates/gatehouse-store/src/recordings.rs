//! Where each session's recording is, what state it is in and what it must hash to. The
//! node key's MAC covers the row's state, path, event count and digest and is rewritten at
//! every state change, so flipping a sealed row to `pruned` or `failed`, or pointing it at
//! another file, is detected without the key. A live recording also gets a MAC'd checkpoint
//! (event count, chain digest, time) every few seconds; when the broker dies, the startup
//! that marks it `interrupted` moves the last checkpoint into the row's (MAC'd) count and
//! digest, so the surviving file is verified up to it, not only by its unkeyed chain.
//!
//! A state change is made only from a row that still authenticates: a row edited in the
//! store is never blessed with a fresh MAC. Rows from before these MACs are `legacy` and
//! verified by the old rule (a sealed row's MAC over count and digest).

use sqlx::Row;

use crate::{MasterKey, Result, Store, StoreError, now_millis};

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

/// A point up to which a recording is known good: `events` events hashing to `digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingCheckpoint {
    pub events: i64,
    pub digest: String,
    /// Unix milliseconds when it was stored.
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    pub session_id: String,
    pub path: String,
    pub state: RecordingState,
    pub size: Option<i64>,
    /// Sealed: the final count and digest. Interrupted: those of its last checkpoint.
    pub events: Option<i64>,
    pub digest: Option<String>,
    /// Whether the node key's MAC over the row's state, path, count and digest checks out.
    pub authentic: bool,
    /// A live recording's last checkpoint (authenticated), or the one an interrupted
    /// recording is verified to.
    pub checkpoint: Option<RecordingCheckpoint>,
    /// A checkpoint is stored but its MAC does not check out.
    pub checkpoint_forged: bool,
    pub started_at: i64,
}

fn mac_context(session_id: &str) -> String {
    format!("gatehouse recording:{session_id}")
}

/// The legacy MAC data (sealed rows written before state and path were covered).
fn legacy_mac_data(events: i64, digest: &str) -> Vec<u8> {
    format!("{events}:{digest}").into_bytes()
}

/// What the row MAC covers, as an unambiguous JSON array.
fn mac_data(state: &str, path: &str, events: Option<i64>, digest: Option<&str>) -> Vec<u8> {
    serde_json::json!(["v2", state, path, events, digest])
        .to_string()
        .into_bytes()
}

fn checkpoint_context(session_id: &str) -> String {
    format!("gatehouse recording checkpoint:{session_id}")
}

fn checkpoint_data(events: i64, digest: &str, at: i64) -> Vec<u8> {
    serde_json::json!(["cp1", events, digest, at])
        .to_string()
        .into_bytes()
}

/// Compares MACs without early exit.
fn same_mac(expected: &str, given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .bytes()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A recording's state change, ready to write (see [`Transition::apply`]).
pub(crate) struct Transition {
    session_id: String,
    /// The state it was read in: the write happens only if the row is still in it.
    from: String,
    to: RecordingState,
    size: Option<i64>,
    events: Option<i64>,
    digest: Option<String>,
    mac: Option<String>,
}

impl Transition {
    /// Writes the change on `conn` (inside the caller's transaction, if it has one), if the
    /// row is still in the state it was read in. Returns whether it was written.
    pub(crate) async fn apply(&self, conn: &mut sqlx::AnyConnection) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE sessions SET recording_state = $1, recording_size = COALESCE($2, recording_size),
                 recording_events = $3, recording_digest = $4, recording_mac = $5, recording_legacy = 0
             WHERE id = $6 AND recording_state = $7",
        )
        .bind(self.to.as_str())
        .bind(self.size)
        .bind(self.events)
        .bind(self.digest.as_deref())
        .bind(self.mac.as_deref())
        .bind(&self.session_id)
        .bind(&self.from)
        .execute(conn)
        .await?;
        Ok(done.rows_affected())
    }
}

/// [`Store::recording_started`]'s write, on `conn` (inside the caller's transaction, if it
/// has one).
pub(crate) async fn started_on(
    conn: &mut sqlx::AnyConnection,
    key: &MasterKey,
    session_id: &str,
    path: &str,
) -> Result<()> {
    let mac = key.mac(
        &mac_context(session_id),
        &mac_data("recording", path, None, None),
    );
    // `recording_state IS NULL`: a registration that comes late (a slow store) never
    // turns a recording already sealed or failed back into a live one
    sqlx::query(
        "UPDATE sessions SET recording_path = $1, recording_state = 'recording', recording_mac = $2,
             recording_legacy = 0 WHERE id = $3 AND recording_state IS NULL",
    )
    .bind(path)
    .bind(mac)
    .bind(session_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`Store::recording_checkpoint`]'s write, on `conn`.
pub(crate) async fn checkpoint_on(
    conn: &mut sqlx::AnyConnection,
    key: &MasterKey,
    session_id: &str,
    events: u64,
    digest: &str,
) -> Result<()> {
    let events = i64::try_from(events).unwrap_or(i64::MAX);
    let at = now_millis();
    let mac = key.mac(
        &checkpoint_context(session_id),
        &checkpoint_data(events, digest, at),
    );
    sqlx::query(
        "UPDATE sessions SET recording_checkpoint_events = $1, recording_checkpoint_digest = $2,
             recording_checkpoint_at = $3, recording_checkpoint_mac = $4
         WHERE id = $5 AND recording_state = 'recording'
           AND (recording_checkpoint_events IS NULL OR recording_checkpoint_events < $6)",
    )
    .bind(events)
    .bind(digest)
    .bind(at)
    .bind(mac)
    .bind(session_id)
    .bind(events)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row as stored, before it is checked.
struct RawRecording {
    session_id: String,
    path: String,
    state: String,
    size: Option<i64>,
    events: Option<i64>,
    digest: Option<String>,
    mac: Option<String>,
    legacy: bool,
    checkpoint: Option<RecordingCheckpoint>,
    checkpoint_mac: Option<String>,
    started_at: i64,
}

const COLUMNS: &str = "id, COALESCE(recording_path, ''), recording_state, recording_size,
    recording_events, recording_digest, recording_mac, recording_legacy,
    recording_checkpoint_events, recording_checkpoint_digest, recording_checkpoint_at,
    recording_checkpoint_mac, started_at";

fn raw_from_row(r: &sqlx::any::AnyRow) -> Result<RawRecording> {
    let cp_events: Option<i64> = r.try_get(8)?;
    let cp_digest: Option<String> = r.try_get(9)?;
    let cp_at: Option<i64> = r.try_get(10)?;
    let checkpoint = match (cp_events, cp_digest, cp_at) {
        (Some(events), Some(digest), Some(at)) => Some(RecordingCheckpoint { events, digest, at }),
        _ => None,
    };
    Ok(RawRecording {
        session_id: r.try_get(0)?,
        path: r.try_get(1)?,
        state: r.try_get(2)?,
        size: r.try_get(3)?,
        events: r.try_get(4)?,
        digest: r.try_get(5)?,
        mac: r.try_get(6)?,
        legacy: r.try_get::<i64, _>(7)? != 0,
        checkpoint,
        checkpoint_mac: r.try_get(11)?,
        started_at: r.try_get(12)?,
    })
}

impl Store {
    fn row_mac(
        &self,
        raw_id: &str,
        state: &str,
        path: &str,
        events: Option<i64>,
        digest: Option<&str>,
    ) -> String {
        self.master_key
            .mac(&mac_context(raw_id), &mac_data(state, path, events, digest))
    }

    /// Whether the row's MAC checks out. Legacy rows (written before state and path were
    /// covered) follow the old rule: a MAC, when present, is the old one over count and
    /// digest (a row sealed then), and a sealed row must have it. A current row marked
    /// legacy by an editor still fails, since its MAC is not an old one; what stays open is
    /// a row marked legacy with its MAC removed, in a state other than sealed.
    fn row_authentic(&self, r: &RawRecording) -> bool {
        let Some(mac) = &r.mac else {
            // legacy rows only had a MAC once sealed
            return r.legacy && r.state != "sealed";
        };
        if !r.legacy {
            let v2 = self.row_mac(
                &r.session_id,
                &r.state,
                &r.path,
                r.events,
                r.digest.as_deref(),
            );
            return same_mac(&v2, mac);
        }
        match (r.events, &r.digest) {
            (Some(e), Some(d)) => same_mac(
                &self
                    .master_key
                    .mac(&mac_context(&r.session_id), &legacy_mac_data(e, d)),
                mac,
            ),
            _ => false,
        }
    }

    fn checkpoint_authentic(
        &self,
        session_id: &str,
        c: &RecordingCheckpoint,
        mac: Option<&str>,
    ) -> bool {
        let expected = self.master_key.mac(
            &checkpoint_context(session_id),
            &checkpoint_data(c.events, &c.digest, c.at),
        );
        mac.is_some_and(|m| same_mac(&expected, m))
    }

    fn record_from_raw(&self, r: RawRecording) -> Result<RecordingRecord> {
        let state = RecordingState::parse(&r.state)?;
        let authentic = self.row_authentic(&r);
        let (checkpoint, checkpoint_forged) = match state {
            RecordingState::Recording => match &r.checkpoint {
                Some(c)
                    if self.checkpoint_authentic(&r.session_id, c, r.checkpoint_mac.as_deref()) =>
                {
                    (Some(c.clone()), false)
                }
                Some(_) => (None, true),
                None => (None, false),
            },
            // the row MAC covers what the interrupted recording is verified to
            RecordingState::Interrupted => match (r.events, &r.digest) {
                (Some(events), Some(digest)) => (
                    Some(RecordingCheckpoint {
                        events,
                        digest: digest.clone(),
                        at: r.checkpoint.as_ref().map_or(0, |c| c.at),
                    }),
                    false,
                ),
                _ => (None, false),
            },
            _ => (None, false),
        };
        Ok(RecordingRecord {
            session_id: r.session_id,
            path: r.path,
            state,
            size: r.size,
            events: r.events,
            digest: r.digest,
            authentic,
            checkpoint,
            checkpoint_forged,
            started_at: r.started_at,
        })
    }

    async fn raw_recording(&self, session_id: &str) -> Result<RawRecording> {
        let sql =
            format!("SELECT {COLUMNS} FROM sessions WHERE id = $1 AND recording_state IS NOT NULL");
        let row = self
            .row_by_key(sql, session_id, "recording of session")
            .await?;
        raw_from_row(&row)
    }

    /// Registers a live recording at `path` (state `recording`), once: a row that already
    /// has a recording state (sealed, failed…) is left alone. Sessions register theirs
    /// through [`Store::recording_started_later`]; this is the same write, awaited.
    pub async fn recording_started(&self, session_id: &str, path: &str) -> Result<()> {
        let _turn = self.write_turn().await?;
        let mut conn = self.pool.acquire().await?;
        started_on(&mut conn, &self.master_key, session_id, path).await
    }

    /// Stores a live recording's checkpoint: `events` events written, hashing to `digest`.
    /// Only moves forward, and only while the recording is live. Sessions store theirs
    /// through [`Store::checkpoint_later`]; this is the same write, awaited.
    pub async fn recording_checkpoint(
        &self,
        session_id: &str,
        events: u64,
        digest: &str,
    ) -> Result<()> {
        let _turn = self.write_turn().await?;
        let mut conn = self.pool.acquire().await?;
        checkpoint_on(&mut conn, &self.master_key, session_id, events, digest).await
    }

    /// Moves a recording to `to`, with a fresh MAC if its row still authenticates (else the
    /// old MAC stays, and verification reports the row as tampered). `events`/`digest`
    /// replace the stored ones when given.
    async fn transition(
        &self,
        session_id: &str,
        to: RecordingState,
        size: Option<i64>,
        counted: Option<(i64, String)>,
    ) -> Result<()> {
        let raw = self.raw_recording(session_id).await?;
        if let Some(t) = self.prepare_transition(&raw, to, size, counted) {
            let _turn = self.write_turn().await?;
            let mut conn = self.pool.acquire().await?;
            t.apply(&mut conn).await?;
        }
        Ok(())
    }

    /// The change of `raw`'s recording to `to`, its new MAC computed; `None` when there is
    /// nothing to do (an end state is final).
    fn prepare_transition(
        &self,
        raw: &RawRecording,
        to: RecordingState,
        size: Option<i64>,
        counted: Option<(i64, String)>,
    ) -> Option<Transition> {
        let session_id = raw.session_id.as_str();
        // An end state is final: a node that comes back after another node closed its
        // sessions as interrupted must not seal (resurrect) or fail their recordings.
        let ending = matches!(
            to,
            RecordingState::Sealed | RecordingState::Failed | RecordingState::Interrupted
        );
        if ending && raw.state != RecordingState::Recording.as_str() {
            tracing::warn!(
                session_id,
                state = %raw.state,
                to = to.as_str(),
                "recording already ended; its state stays"
            );
            return None;
        }
        let (events, digest) = match counted {
            Some((e, d)) => (Some(e), Some(d)),
            None => (raw.events, raw.digest.clone()),
        };
        let mac = if self.row_authentic(raw) {
            Some(self.row_mac(
                session_id,
                to.as_str(),
                &raw.path,
                events,
                digest.as_deref(),
            ))
        } else {
            tracing::error!(
                session_id,
                state = %raw.state,
                "recording row does not authenticate; changing its state without a new MAC"
            );
            raw.mac.clone()
        };
        Some(Transition {
            session_id: raw.session_id.clone(),
            from: raw.state.clone(),
            to,
            size,
            events,
            digest,
            mac,
        })
    }

    /// The change of a live recording to `interrupted`, counted up to its last authentic
    /// checkpoint (a checkpoint that does not authenticate is ignored and logged).
    fn prepare_interrupted(&self, raw: &RawRecording) -> Option<Transition> {
        let checkpoint = raw.checkpoint.clone().filter(|c| {
            let ok = self.checkpoint_authentic(&raw.session_id, c, raw.checkpoint_mac.as_deref());
            if !ok {
                tracing::error!(session_id = %raw.session_id, "recording checkpoint does not authenticate; ignored");
            }
            ok
        });
        let counted = checkpoint.map(|c| (c.events, c.digest));
        self.prepare_transition(raw, RecordingState::Interrupted, None, counted)
    }

    /// The change of a session's live recording to `interrupted`, from its row as it is
    /// now; `None` when the session has no recording or it has ended already.
    pub(crate) async fn interrupted_recording(
        &self,
        session_id: &str,
    ) -> Result<Option<Transition>> {
        match self.raw_recording(session_id).await {
            Ok(raw) => Ok(self.prepare_interrupted(&raw)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn recording_sealed(
        &self,
        session_id: &str,
        size: u64,
        events: u64,
        digest: &str,
    ) -> Result<()> {
        let events = i64::try_from(events).unwrap_or(i64::MAX);
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.transition(
            session_id,
            RecordingState::Sealed,
            Some(size),
            Some((events, digest.to_owned())),
        )
        .await
    }

    pub async fn recording_failed(&self, session_id: &str) -> Result<()> {
        self.transition(session_id, RecordingState::Failed, None, None)
            .await
    }

    /// Marks the recordings of the node with id `node_id` still being written as
    /// interrupted (after a crash, or once another node took over its sessions), each
    /// verified up to its last authentic checkpoint.
    pub async fn interrupt_recordings(&self, node_id: &str) -> Result<u64> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions
             WHERE node_id = $1 AND recording_state = 'recording' AND ended_at IS NOT NULL"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        let mut done = 0;
        let _turn = self.write_turn().await?;
        let mut conn = self.pool.acquire().await?;
        for row in &rows {
            if let Some(t) = self.prepare_interrupted(&raw_from_row(row)?) {
                done += t.apply(&mut conn).await?;
            }
        }
        Ok(done)
    }

    pub async fn recording(&self, session_id: &str) -> Result<RecordingRecord> {
        let raw = self.raw_recording(session_id).await?;
        self.record_from_raw(raw)
    }

    /// The recordings of the sessions `ids` that have one, by session id: a few queries for
    /// any number (the detective reads every live session's each pass).
    pub async fn recordings_of(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, RecordingRecord>> {
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(crate::IDS_PER_STATEMENT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(recordings_of_sql(chunk.len())));
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&self.pool).await? {
                let record = self.record_from_raw(raw_from_row(&row)?)?;
                found.insert(record.session_id.clone(), record);
            }
        }
        Ok(found)
    }

    /// Every recording, oldest first; with `older_than` (Unix ms) only those started before.
    pub async fn list_recordings(&self, older_than: Option<i64>) -> Result<Vec<RecordingRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions WHERE recording_state IS NOT NULL AND started_at < $1
             ORDER BY started_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(older_than.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| raw_from_row(r).and_then(|raw| self.record_from_raw(raw)))
            .collect()
    }

    /// Marks a recording whose files were removed by retention. The path stays (under the
    /// MAC), so the row still says what was removed.
    pub async fn recording_pruned(&self, session_id: &str) -> Result<()> {
        self.transition(session_id, RecordingState::Pruned, None, None)
            .await
    }
}

/// The recordings of `n` sessions by id (a detective pass reads them all).
pub(crate) fn recordings_of_sql(n: usize) -> String {
    format!(
        "SELECT {COLUMNS} FROM sessions WHERE recording_state IS NOT NULL AND id IN ({})",
        crate::placeholders(1, n)
    )
}

#[cfg(test)]
#[path = "recordings_tests.rs"]
mod tests;
