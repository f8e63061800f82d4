//! One recording on disk: `ROOT/YYYY/MM/DD/<session>.cast` and its chain sidecar
//! `<session>.cast.chain` (`N <hex digest>` per line, line 0 for the header).
//!
//! The sidecar is always flushed before the cast file, so after a crash it is never behind:
//! a cast line without its digest can only have been added later.
//!
//! Recordings hold everything typed and shown, passwords typed at a target's own prompt
//! included: files are created 0600 and the directories Gatehouse creates 0700, whatever
//! the process umask (which can only narrow them further).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::format::{Chain, Code, DIGEST_LEN, Header, push_event_line};

/// Bytes buffered before a write at the latest. A session's buffer grows this large only
/// while it outputs this much within a flush interval (a bulk transfer): 256 KiB rather
/// than 64 KiB makes a quarter of the writes (each the sidecar's and the cast file's) and
/// took the recorder alone from ~1.0 to ~1.09 GB/s (recorder bench, 2-core development
/// machine); 128 KiB, ~1.07 GB/s.
pub const BUFFER: usize = 256 * 1024;
/// Statement-log lines queued before the recorder is woken to write them (see
/// `RecorderHandle::line`).
pub const LINES_QUEUE: usize = 64 * 1024;
/// What a recording's buffer starts with: it grows to [`BUFFER`] only for a session that
/// outputs that much between two flushes, and is let go again after a flush of much less;
/// after a flush of less than this, the buffer is let go altogether, so an idle session
/// (most of them) holds none (memory per live session, issue 14 §4).
const INITIAL_BUFFER: usize = 1024;
/// The sidecar's buffer: one digest line (~70 bytes) per event; written to the OS when this
/// full (the sidecar may run ahead of the cast file, never behind it). Grown as lines come,
/// not allocated up front: an idle session holds a few digest lines.
const CHAIN_BUFFER: usize = 8 * 1024;
/// Bytes kept free at the front of a recording's buffer, never written: room for the chain
/// digest before the first line there, so that every line is hashed in one pass with the
/// digest before it ([`Chain::push_at`]).
const GAP: usize = DIGEST_LEN;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("cannot create recording {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write recording {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A finished recording, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub path: PathBuf,
    pub size: u64,
    pub events: u64,
    pub digest: String,
}

pub struct RecordingFile {
    path: PathBuf,
    cast: File,
    /// Cast lines not yet written, after a [`GAP`] (or nothing at all, no allocation, when
    /// a flush let the buffer go): the lines are made here, hashed where they lie and
    /// written from here (no line is copied between its encoding and the write).
    pending: Vec<u8>,
    chain_file: File,
    /// Sidecar lines not yet written, made in place.
    chain_pending: Vec<u8>,
    chain: Chain,
    size: u64,
}

/// Mode of every file Gatehouse writes under the recordings root.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory Gatehouse creates under (and as) the recordings root.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each 0700. Directories that already exist keep
/// their mode (an administrator may have chosen it).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Options that create a new file 0600, failing if it exists.
pub fn private_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true).mode(PRIVATE_FILE_MODE);
    o
}

pub use gatehouse_core::civil_from_days;

/// `YYYY/MM/DD/<id>.cast` for a session started at `started`.
pub fn relative_path(session_id: &str, started: SystemTime) -> PathBuf {
    relative_path_with(session_id, started, crate::kind::CAST_EXTENSION)
}

/// `YYYY/MM/DD/<id>.<extension>` for a session started at `started`.
pub fn relative_path_with(session_id: &str, started: SystemTime, extension: &str) -> PathBuf {
    let secs = started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    PathBuf::from(format!("{y:04}/{m:02}/{d:02}/{session_id}.{extension}"))
}

pub fn chain_path(cast: &Path) -> PathBuf {
    let mut p = cast.as_os_str().to_owned();
    p.push(crate::kind::CHAIN_SUFFIX);
    PathBuf::from(p)
}

impl RecordingFile {
    /// Creates the recording and writes its header (flushed at once, so a session that
    /// cannot be recorded is known before it starts).
    pub fn create(
        root: &Path,
        session_id: &str,
        started: SystemTime,
        header: &Header,
    ) -> Result<RecordingFile, RecordError> {
        RecordingFile::create_at(
            root.join(relative_path(session_id, started)),
            &header.to_line(),
        )
    }

    /// Creates a line-oriented recording (e.g. a SQL statement log) at `path` with
    /// `header_line` as its line 0, under the same chain and flushing rules.
    pub fn create_at(path: PathBuf, header_line: &str) -> Result<RecordingFile, RecordError> {
        let create_err = |source| RecordError::Create {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(create_err)?;
        }
        let open = |p: &Path| private_file_options().open(p);
        let cast = open(&path).map_err(create_err)?;
        let chain_file = open(&chain_path(&path)).map_err(create_err)?;
        let chain = Chain::new(header_line);
        let mut rec = RecordingFile {
            path,
            cast,
            pending: Vec::with_capacity(INITIAL_BUFFER),
            chain_file,
            chain_pending: Vec::new(),
            chain,
            size: 0,
        };
        rec.pending.resize(GAP, 0);
        rec.pending.extend_from_slice(header_line.as_bytes());
        rec.line_added(GAP, 0)?;
        rec.flush()?;
        Ok(rec)
    }

    /// [`RecordingFile::create_at`] on a blocking thread, for a caller on a runtime:
    /// creating a file can take milliseconds (the filesystem's inode allocation on a full
    /// disk), time the runtime's thread owes to other sessions' relays.
    pub async fn create_at_blocking(
        path: PathBuf,
        header_line: String,
    ) -> Result<RecordingFile, RecordError> {
        let at = path.clone();
        tokio::task::spawn_blocking(move || RecordingFile::create_at(at, &header_line))
            .await
            .unwrap_or_else(|e| {
                Err(RecordError::Create {
                    path: path.display().to_string(),
                    source: std::io::Error::other(e),
                })
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_err(&self, source: std::io::Error) -> RecordError {
        RecordError::Write {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one event line.
    pub fn append(&mut self, line: &str) -> Result<(), RecordError> {
        self.make_room(line.len())?;
        let start = self.pending.len();
        self.pending.extend_from_slice(line.as_bytes());
        self.event_added(start)
    }

    /// Appends the line `write` writes (about `len` bytes, no newline, UTF-8), made in
    /// place: a line formatted by the recorder rather than by its source
    /// ([`DeferredLine`](crate::DeferredLine)).
    pub fn append_with(
        &mut self,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), RecordError> {
        self.make_room(len)?;
        let start = self.pending.len();
        write(&mut self.pending);
        self.event_added(start)
    }

    /// Appends the [`event_line`](crate::format::event_line) of `data`, made in place.
    pub fn append_event(
        &mut self,
        at: Duration,
        code: Code,
        data: &str,
    ) -> Result<(), RecordError> {
        // what escaping adds to terminal text is a few bytes in a hundred
        self.make_room(data.len() + data.len() / 4 + 64)?;
        let start = self.pending.len();
        push_event_line(&mut self.pending, at, code, data);
        self.event_added(start)
    }

    /// Writes what is buffered if a line of about `len` bytes would not fit in the buffer
    /// after it: the buffer stays at [`BUFFER`] bytes (one per recorded session), unless a
    /// single line is longer.
    /// Makes the buffer's [`GAP`] if it has none.
    fn make_room(&mut self, len: usize) -> Result<(), RecordError> {
        let buffered = self.buffered();
        if buffered > 0 && buffered + len + 1 > BUFFER {
            self.write_pages()?;
        }
        if self.pending.len() < GAP {
            self.pending.resize(GAP, 0);
        }
        // room for the line and the escaper's margin past it; a buffer that is already
        // large (a burst) goes straight to the size the burst needs instead of doubling,
        // which would leave it at up to twice that
        let need = self.pending.len() + len + crate::json::SLACK;
        if need > self.pending.capacity() && self.pending.capacity() >= INITIAL_BUFFER * 64 {
            let burst = GAP + BUFFER + len + crate::json::SLACK;
            self.pending
                .reserve_exact(need.max(burst) - self.pending.len());
        }
        Ok(())
    }

    /// The event line at `pending[start..]` is complete: chains it.
    fn event_added(&mut self, start: usize) -> Result<(), RecordError> {
        self.chain.push_at(&mut self.pending, start);
        self.line_added(start, self.chain.events())
    }

    /// The line at `pending[start..]`, line `index` of the chain, is complete: ends it and
    /// queues its digest; writes both once the buffer is full.
    fn line_added(&mut self, start: usize, index: u64) -> Result<(), RecordError> {
        self.pending.push(b'\n');
        self.size += (self.pending.len() - start) as u64;
        // writing to a Vec cannot fail
        let _ = write!(self.chain_pending, "{index} ");
        self.chain.push_hex(&mut self.chain_pending);
        self.chain_pending.push(b'\n');
        if self.buffered() >= BUFFER {
            self.write_pages()?;
        } else if self.chain_pending.len() >= CHAIN_BUFFER {
            self.write_chain()?;
        }
        Ok(())
    }

    /// Events appended so far and the chain digest after the last of them. After a
    /// [`RecordingFile::flush`] these are on disk (in the OS's hands, which survive the
    /// broker being killed): what a checkpoint records.
    pub fn progress(&self) -> (u64, String) {
        (self.chain.events(), self.chain.hex())
    }

    /// Bytes written since the last flush.
    pub fn buffered(&self) -> usize {
        self.pending.len().saturating_sub(GAP)
    }

    /// Hands buffered events to the OS: the sidecar first (the cast file never reaches the
    /// disk ahead of its digests), then the cast file.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.write_chain()?;
        let lines = self.pending.get(GAP..).unwrap_or_default();
        self.cast.write_all(lines).map_err(|e| self.write_err(e))?;
        let written = lines.len();
        self.pending.truncate(GAP);
        if written < INITIAL_BUFFER {
            // a quiet moment (an idle session, keystrokes): hold no buffer until the next
            // event
            self.pending = Vec::new();
        } else if self.pending.capacity() > 4 * written {
            // the burst that grew it is over
            self.pending = Vec::with_capacity(INITIAL_BUFFER);
        }
        Ok(())
    }

    /// A full buffer's write: what is buffered up to the cast file's last page boundary,
    /// the rest (less than a page) kept at the front of the buffer for the next write, or
    /// all of it if that is less than a page. The kernel copies whole pages into its cache
    /// ~15 % faster than writes that start and end inside pages (200 MiB in 35 KiB writes:
    /// 2.75 GB/s unaligned, 3.25 GB/s aligned, on the development machine); a burst's
    /// lines (32 KiB of output each) are never page-sized. What is kept goes out at the
    /// next [`RecordingFile::flush`] (the recorder's, within its flush interval), which
    /// writes everything: only a flush promises that lines are in the OS's hands.
    fn write_pages(&mut self) -> Result<(), RecordError> {
        const PAGE: u64 = 4096;
        let buffered = self.buffered();
        let end = self.size; // the file's length once everything buffered is written
        // what is buffered up to the last page boundary: none (or all) of it when the
        // boundary lies before it (or at its end)
        let aligned = (buffered as u64).saturating_sub(end % PAGE);
        if end.is_multiple_of(PAGE) || aligned < PAGE {
            return self.flush();
        }
        // the sidecar first, as in a flush: it may run ahead of the cast file, never behind
        self.write_chain()?;
        let aligned = aligned as usize;
        let lines = self.pending.get(GAP..GAP + aligned).unwrap_or_default();
        self.cast.write_all(lines).map_err(|e| self.write_err(e))?;
        self.pending.copy_within(GAP + aligned.., GAP);
        self.pending.truncate(GAP + buffered - aligned);
        Ok(())
    }

    /// Hands the sidecar's buffered lines to the OS.
    fn write_chain(&mut self) -> Result<(), RecordError> {
        self.chain_file
            .write_all(&self.chain_pending)
            .map_err(|e| self.write_err(e))?;
        let written = self.chain_pending.len();
        self.chain_pending.clear();
        if written < INITIAL_BUFFER {
            // as the cast file's buffer: a quiet session holds none
            self.chain_pending = Vec::new();
        }
        Ok(())
    }

    /// Flushes, syncs to disk and returns what the store keeps.
    pub fn seal(mut self) -> Result<Sealed, RecordError> {
        self.flush()?;
        self.chain_file
            .sync_all()
            .and_then(|()| self.cast.sync_all())
            .map_err(|e| self.write_err(e))?;
        Ok(Sealed {
            path: self.path.clone(),
            size: self.size,
            events: self.chain.events(),
            digest: self.chain.hex(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// An 80×24 header titled "t", for tests.
    pub(crate) fn header() -> Header {
        Header {
            width: 80,
            height: 24,
            timestamp: 0,
            term: None,
            title: "t".into(),
            env: vec![],
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn recordings_and_sidecars_are_private_whatever_the_parent_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("recordings");
        create_private_dir(&root).unwrap();
        let t = UNIX_EPOCH + std::time::Duration::from_secs(20_780 * 86_400);
        let header = header();
        let rec = RecordingFile::create(&root, "s1", t, &header).unwrap();
        let sealed = rec.seal().unwrap();
        assert_eq!(mode(&sealed.path), 0o600);
        assert_eq!(mode(&chain_path(&sealed.path)), 0o600);
        for dir in ["", "2026", "2026/11", "2026/11/23"] {
            assert_eq!(mode(&root.join(dir)), 0o700, "{dir}");
        }
        // a second recording the same day reuses the tree; an existing file is never reused
        assert!(RecordingFile::create(&root, "s1", t, &header).is_err());
    }

    /// An idle session's recording holds no buffer once flushed; a busy one keeps the room
    /// its burst needed for the next; nothing written is lost either way.
    #[test]
    fn a_quiet_recording_holds_no_buffer_and_a_busy_one_keeps_its_room() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("recordings");
        create_private_dir(&root).unwrap();
        let header = header();
        let mut rec = RecordingFile::create(&root, "s1", UNIX_EPOCH, &header).unwrap();
        rec.append_event(Duration::from_millis(100), Code::Output, "hello")
            .unwrap();
        rec.flush().unwrap();
        assert_eq!(
            (rec.pending.capacity(), rec.chain_pending.capacity()),
            (0, 0)
        );
        let burst = "x".repeat(4000);
        rec.append_event(Duration::from_millis(200), Code::Output, &burst)
            .unwrap();
        rec.flush().unwrap();
        assert!(rec.pending.capacity() >= 4000, "{}", rec.pending.capacity());
        rec.append_event(Duration::from_millis(300), Code::Output, "bye")
            .unwrap();
        let sealed = rec.seal().unwrap();
        let text = std::fs::read_to_string(&sealed.path).unwrap();
        assert!(text.contains("hello") && text.contains(&burst) && text.contains("bye"));
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    /// A burst's full buffer is written up to the file's last page boundary, the rest kept
    /// for the next write; a flush writes everything; the recording is whole either way.
    #[test]
    fn a_full_buffer_is_written_in_whole_pages_and_a_flush_writes_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("burst.cast");
        let mut rec = RecordingFile::create_at(path.clone(), r#"{"version":2}"#).unwrap();
        let on_disk = || std::fs::metadata(&path).unwrap().len();
        // a keystroke, then a line longer than the buffer: the page boundary lies before
        // what is buffered, all of it is written
        rec.append_event(Duration::ZERO, Code::Input, "k").unwrap();
        let long = "z".repeat(100 * 1024);
        rec.append_event(Duration::ZERO, Code::Output, &long)
            .unwrap();
        let mut lines = vec!["k".to_owned(), long];
        let mut before = on_disk();
        for i in 0..40 {
            // 32 KiB of output and an odd tail: never a page's multiple
            let text = format!("{i} {}", "y".repeat(32 * 1024 + 7 * i));
            rec.append_event(Duration::from_millis(i as u64), Code::Output, &text)
                .unwrap();
            lines.push(text);
            let len = on_disk();
            assert!(
                len == before || len.is_multiple_of(4096) || rec.buffered() == 0,
                "a burst's write ended inside a page: {len} bytes on disk, {} buffered",
                rec.buffered()
            );
            before = len;
            assert!(rec.buffered() < BUFFER + 40 * 1024, "{}", rec.buffered());
            assert_eq!(len + rec.buffered() as u64, rec.size);
        }
        assert!(rec.buffered() > 0, "nothing kept: the test did not test");
        rec.flush().unwrap();
        assert_eq!((on_disk(), rec.buffered()), (rec.size, 0));
        let sealed = rec.seal().unwrap();
        let expected = crate::Expected {
            events: sealed.events,
            digest: sealed.digest,
        };
        assert_eq!(
            crate::verify(&path, Some(&expected)).unwrap(),
            crate::Verdict::Ok { events: 42 }
        );
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, want) in text.lines().skip(1).zip(&lines) {
            let (_, _, data): (f64, String, String) = serde_json::from_str(line).unwrap();
            assert_eq!(&data, want);
        }
        assert_eq!(text.lines().count(), 43);
    }

    /// A burst's buffer grows to what the burst needs (a full buffer and the line that
    /// overflows it), not by doubling past it.
    #[test]
    fn a_burst_s_buffer_is_what_the_burst_needs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut rec = RecordingFile::create_at(tmp.path().join("b.cast"), "{}").unwrap();
        let line = "w".repeat(45 * 1024);
        let mut most = 0;
        for i in 0..30 {
            rec.append_event(Duration::from_millis(i), Code::Output, &line)
                .unwrap();
            most = most.max(rec.pending.capacity());
        }
        // the line's room as the escaper takes it: its length and a quarter
        let bound = GAP + BUFFER + line.len() + line.len() / 4 + 64 + crate::json::SLACK;
        assert!(most <= bound, "{most} bytes of buffer, {bound} at most");
        assert!(most > BUFFER, "{most}: the burst never filled the buffer");
    }

    #[test]
    fn dates_and_paths() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        let t = UNIX_EPOCH + std::time::Duration::from_secs(20_780 * 86_400 + 3600);
        assert_eq!(
            relative_path("abc", t),
            PathBuf::from("2026/11/23/abc.cast")
        );
    }
}
