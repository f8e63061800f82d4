//! What a stored recording is worth: the store's row (its MAC over state, path, count and
//! digest, and its checkpoint's) checked with the node key, then the file against its
//! chain and the sealed digest or, unsealed, its last checkpoint. One verdict for
//! `gatehouse recordings verify`, the review list and the detective. Needs the store's
//! record type: behind the `store` feature, so that what only reads recordings (the fuzz
//! targets) does not link the store.

use std::path::Path;

use gatehouse_store::{RecordingRecord, RecordingState};

use crate::verify::{Expected, Verdict, verify, verify_to_checkpoint};

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
