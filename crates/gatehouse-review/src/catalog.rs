//! The sessions a reviewer can open: the registry's rows joined with their recordings'
//! verdicts, and the list filters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_recorder::{Expected, Verdict, verify, verify_to_checkpoint};
use gatehouse_store::{RecordingRecord, RecordingState, SessionRecord, Store};

use crate::liveinfo::{LiveInfo, TAIL_BYTES, live_info, scan_tail};

/// What a recording is worth, checked with the same verifier as `gatehouse recordings
/// verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingStatus {
    Ok {
        events: u64,
    },
    /// Still being written by a live session.
    Live {
        events: u64,
    },
    /// The broker died while recording: intact up to its last complete event, and
    /// authenticated up to its last checkpoint (event count) if it had one.
    Interrupted {
        events: u64,
        checkpoint: Option<u64>,
    },
    Tampered {
        event: u64,
        why: String,
    },
    /// The recording failed and the session was ended.
    Failed,
    Pruned,
    /// The session has no recording (refused before it started).
    None,
    Unreadable(String),
}

impl RecordingStatus {
    pub fn is_tampered(&self) -> bool {
        matches!(self, RecordingStatus::Tampered { .. })
    }

    /// One word for the list.
    pub fn short(&self) -> &'static str {
        match self {
            RecordingStatus::Ok { .. } => "ok",
            RecordingStatus::Live { .. } => "live",
            RecordingStatus::Interrupted { .. } => "interrupted",
            RecordingStatus::Tampered { .. } => "TAMPERED",
            RecordingStatus::Failed => "failed",
            RecordingStatus::Pruned => "pruned",
            RecordingStatus::None => "-",
            RecordingStatus::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for RecordingStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordingStatus::Ok { events } => write!(f, "ok ({events} events)"),
            RecordingStatus::Live { events } => write!(f, "live ({events} events so far)"),
            RecordingStatus::Interrupted {
                events,
                checkpoint: Some(at),
            } => write!(
                f,
                "truncated (interrupted) after {events} events, verified to checkpoint at event {at}"
            ),
            RecordingStatus::Interrupted {
                events,
                checkpoint: None,
            } => write!(
                f,
                "truncated (interrupted) after {events} events (no checkpoint: chain only)"
            ),
            RecordingStatus::Tampered { event, why } => {
                write!(f, "TAMPERED at event {event}: {why}")
            }
            RecordingStatus::Failed => f.write_str("failed (recording error; session was ended)"),
            RecordingStatus::Pruned => f.write_str("pruned"),
            RecordingStatus::None => f.write_str("no recording"),
            RecordingStatus::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// Checks a stored recording: its row's MAC (state, path, count, digest), then its file
/// against its chain and the sealed digest, or, unsealed, its last checkpoint.
pub fn recording_status(r: &RecordingRecord) -> RecordingStatus {
    let forged = |why: &str| RecordingStatus::Tampered {
        event: 0,
        why: why.into(),
    };
    if !r.authentic {
        return forged(
            "the store's record (state, path, count or digest) is not authenticated by this node's key",
        );
    }
    if r.checkpoint_forged {
        return forged("the store's checkpoint is not authenticated by this node's key");
    }
    let checkpoint = r.checkpoint.as_ref().map(|c| Expected {
        events: c.events.max(0) as u64,
        digest: c.digest.clone(),
    });
    let path = Path::new(&r.path);
    let verdict = match r.state {
        RecordingState::Sealed => verify(
            path,
            Some(&Expected {
                events: r.events.unwrap_or(0).max(0) as u64,
                digest: r.digest.clone().unwrap_or_default(),
            }),
        ),
        RecordingState::Failed => return RecordingStatus::Failed,
        RecordingState::Pruned => return RecordingStatus::Pruned,
        RecordingState::Recording | RecordingState::Interrupted => match &checkpoint {
            Some(c) => verify_to_checkpoint(path, c),
            None => verify(path, None),
        },
    };
    match verdict {
        Ok(Verdict::Truncated { events }) if r.state == RecordingState::Recording => {
            RecordingStatus::Live { events }
        }
        Ok(Verdict::Truncated { events }) => RecordingStatus::Interrupted {
            events,
            checkpoint: checkpoint.map(|c| c.events),
        },
        Ok(Verdict::Ok { events }) => RecordingStatus::Ok { events },
        Ok(Verdict::Tampered { event, why }) => RecordingStatus::Tampered { event, why },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => RecordingStatus::Tampered {
            event: 0,
            why: "the recording file is missing".into(),
        },
        Err(e) => RecordingStatus::Unreadable(e.to_string()),
    }
}

/// The complete lines in the last [`TAIL_BYTES`] of a recording (empty if unreadable).
fn read_tail(path: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        let from = len.saturating_sub(TAIL_BYTES);
        f.seek(SeekFrom::Start(from))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        if from > 0 {
            // the first line is cut
            let cut = memchr::memchr(b'\n', &bytes).map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
        bytes.truncate(crate::follow::complete_lines(&bytes).len());
        Ok(bytes)
    };
    read().unwrap_or_default()
}

/// Which kind of recording a session has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingKind {
    /// asciicast v2 (`.cast`).
    Terminal,
    /// PostgreSQL statement log (`.sql.jsonl`).
    Sql,
}

impl RecordingKind {
    pub fn of_path(path: &Path) -> RecordingKind {
        if path.to_string_lossy().ends_with(".sql.jsonl") {
            RecordingKind::Sql
        } else {
            RecordingKind::Terminal
        }
    }
}

/// One row of the session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEntry {
    pub id: String,
    pub operator: String,
    pub target: String,
    pub environment: Option<String>,
    pub protocol: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub recording: Option<PathBuf>,
    pub status: RecordingStatus,
    /// Idle time, next limit and lock state of a live session (store catalogs only).
    pub live: Option<LiveInfo>,
}

impl SessionEntry {
    pub fn from_records(s: &SessionRecord, status: RecordingStatus) -> SessionEntry {
        SessionEntry {
            id: s.id.clone(),
            operator: s.operator.clone(),
            target: s.target.clone(),
            environment: s.environment.clone(),
            protocol: s.protocol.clone(),
            started_at: s.started_at,
            ended_at: s.ended_at,
            end_reason: s.end_reason.clone(),
            recording: s.recording_path.as_ref().map(PathBuf::from),
            status,
            live: None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }

    /// How long it lasted (so far, for a live session).
    pub fn duration(&self, now_millis: i64) -> Duration {
        let end = self.ended_at.unwrap_or(now_millis);
        Duration::from_millis((end - self.started_at).max(0) as u64)
    }

    pub fn kind(&self) -> Option<RecordingKind> {
        self.recording.as_deref().map(RecordingKind::of_path)
    }
}

/// Where the list comes from; the TUI asks again now and then to show live sessions.
pub trait Catalog {
    fn sessions(&mut self) -> anyhow::Result<Vec<SessionEntry>>;
}

/// A fixed list (tests, exported sets).
impl Catalog for Vec<SessionEntry> {
    fn sessions(&mut self) -> anyhow::Result<Vec<SessionEntry>> {
        Ok(self.clone())
    }
}

/// The store, read through a runtime handle (the TUI loop is synchronous). Verdicts of
/// finished recordings are cached: a sealed file is hashed once per run.
pub struct StoreCatalog {
    store: Store,
    runtime: tokio::runtime::Handle,
    limit: u32,
    verdicts: HashMap<String, RecordingStatus>,
}

impl StoreCatalog {
    pub fn new(store: Store, runtime: tokio::runtime::Handle, limit: u32) -> StoreCatalog {
        StoreCatalog {
            store,
            runtime,
            limit,
            verdicts: HashMap::new(),
        }
    }
}

impl Catalog for StoreCatalog {
    fn sessions(&mut self) -> anyhow::Result<Vec<SessionEntry>> {
        let (sessions, recordings, policies, operators) = self.runtime.block_on(async {
            let s = self.store.list_sessions(self.limit).await?;
            let r = self.store.list_recordings(None).await?;
            let p = self.store.list_policies().await?;
            let o = self.store.list_operators().await?;
            Ok::<_, gatehouse_store::StoreError>((s, r, p, o))
        })?;
        let now = gatehouse_store::now_millis();
        let policies: HashMap<&str, _> = policies
            .iter()
            .map(|p| (p.environment.as_str(), &p.policy))
            .collect();
        let locked: std::collections::HashSet<&str> = operators
            .iter()
            .filter(|o| o.locked)
            .map(|o| o.name.as_str())
            .collect();
        let recordings: HashMap<&str, &RecordingRecord> = recordings
            .iter()
            .map(|r| (r.session_id.as_str(), r))
            .collect();
        let mut out = Vec::with_capacity(sessions.len());
        for s in &sessions {
            let status = match recordings.get(s.id.as_str()) {
                None if s.recording_state.as_deref() == Some("pruned") => RecordingStatus::Pruned,
                None => RecordingStatus::None,
                // a live recording grows: show it live without hashing it on every refresh
                Some(r) if r.state == RecordingState::Recording && s.ended_at.is_none() => {
                    RecordingStatus::Live { events: 0 }
                }
                Some(r) => match self.verdicts.get(&s.id) {
                    Some(v) => v.clone(),
                    None => {
                        let v = recording_status(r);
                        self.verdicts.insert(s.id.clone(), v.clone());
                        v
                    }
                },
            };
            let mut entry = SessionEntry::from_records(s, status);
            if entry.is_live() {
                let tail = entry
                    .recording
                    .as_deref()
                    .map(read_tail)
                    .unwrap_or_default();
                let policy = s.environment.as_deref().and_then(|e| policies.get(e));
                entry.live = Some(live_info(
                    entry.duration(now),
                    &scan_tail(&tail),
                    policy.and_then(|p| p.idle_timeout),
                    policy.and_then(|p| p.max_session),
                    locked.contains(s.operator.as_str()),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }
}
