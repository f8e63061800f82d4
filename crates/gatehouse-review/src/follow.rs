//! Following a live session's recording like `tail -f`: the recorder appends whole lines
//! (flushed every 100 ms), so a reader takes what is new up to the last complete line and
//! leaves a line still being written for the next look.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

/// How often a followed recording is read again: new output shows well within a second.
pub const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Tail {
    path: PathBuf,
    /// Bytes of complete lines already handed out.
    offset: u64,
    since_poll: Duration,
}

/// The prefix of `bytes` made of complete lines.
pub fn complete_lines(bytes: &[u8]) -> &[u8] {
    memchr::memrchr(b'\n', bytes).map_or(&[], |i| &bytes[..=i])
}

impl Tail {
    /// Follows `path` after the first `offset` bytes (what the caller already read, in
    /// complete lines).
    pub fn new(path: PathBuf, offset: usize) -> Tail {
        Tail {
            path,
            offset: offset as u64,
            since_poll: Duration::ZERO,
        }
    }

    /// After `elapsed` more wall time: the complete lines added since the last look, if it
    /// is time to look and there are any.
    pub fn poll(&mut self, elapsed: Duration) -> Option<Vec<u8>> {
        self.since_poll += elapsed;
        if self.since_poll < POLL {
            return None;
        }
        self.since_poll = Duration::ZERO;
        self.read_new()
    }

    /// The complete lines added since the last read, now.
    pub fn read_new(&mut self) -> Option<Vec<u8>> {
        let mut f = std::fs::File::open(&self.path).ok()?;
        if f.metadata().ok()?.len() <= self.offset {
            return None;
        }
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut bytes = vec![];
        f.read_to_end(&mut bytes).ok()?;
        let n = complete_lines(&bytes).len();
        if n == 0 {
            return None;
        }
        bytes.truncate(n);
        self.offset += n as u64;
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn hands_out_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.cast");
        std::fs::write(&path, "header\none\ntw").unwrap();
        let mut t = Tail::new(path.clone(), complete_lines(b"header\none\ntw").len());
        assert_eq!(t.read_new(), None, "a line being written waits");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\nthree\nfo").unwrap();
        assert_eq!(t.poll(Duration::from_millis(100)), None, "not time yet");
        assert_eq!(t.poll(POLL).as_deref(), Some(&b"two\nthree\n"[..]));
        assert_eq!(t.read_new(), None);
    }
}
