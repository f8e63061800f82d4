//! Session recordings. A terminal session becomes an asciicast v2 file (what `asciinema
//! play`/`cat` read) beside a hash-chain sidecar: each event line's digest covers the
//! previous digest, so flipping a byte, deleting or appending a line shows at the event
//! where it happened. The final digest goes to the store, authenticated with the node's
//! key; [`verify`] checks a file against both.
//!
//! Writing is crash-safe: events are appended and flushed at most 100 ms or 64 KiB after
//! they happen, so a broker killed with SIGKILL leaves a file that parses up to its last
//! complete event. Writing is fail-closed: a recorder that cannot write reports it, and
//! the session is ended rather than continued unrecorded.
//!
//! The recorder owns the recording formats, for writers and readers alike: `format` (the
//! asciicast header and events), `sql_log` (the PostgreSQL statement log's lines), `kind`
//! (file names), and `status` (the verdict on a stored recording, feature `store`).
//! `format`, `sql_log` and `kind` are pure (bytes in, bytes out); `file` and `task` do the
//! I/O.

pub mod file;
pub mod format;
mod json;
pub mod kind;
pub mod sftp;
pub mod sql_log;
#[cfg(feature = "store")]
pub mod status;
pub mod task;
pub mod verify;

pub use file::{RecordError, Sealed};
pub use format::{CastHeader, Chain, Code, EventLine, Header, PTY_KEY, effective_size};
pub use kind::{CAST_EXTENSION, RecordingKind, SQL_LOG_EXTENSION};
pub use task::{
    CHECKPOINT_INTERVAL, Checkpoint, DeferredLine, RecorderHandle, spawn_recorder,
    spawn_recorder_on,
};
pub use verify::{Expected, Verdict, verify, verify_to_checkpoint};
