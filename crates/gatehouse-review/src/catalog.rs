//! The sessions a reviewer can open: the registry's rows joined with their recordings'
//! verdicts, and the list filters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use gatehouse_recorder::RecordingKind;
pub use gatehouse_recorder::status::{RecordingStatus, recording_status};
use gatehouse_store::{RecordingRecord, RecordingState, SessionRecord, Store};

use crate::liveinfo::{LiveInfo, TAIL_BYTES, from_guard, live_info, scan_tail};

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
            if entry.is_live()
                && let Some(guard) = &s.guard
            {
                entry.live = Some(from_guard(now, guard, locked.contains(s.operator.as_str())));
            } else if entry.is_live() {
                // no guard report (an older node): estimated from the recording
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
