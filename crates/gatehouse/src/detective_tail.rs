//! What the continuous pass remembers between passes, so that a pass costs what changed,
//! not the size of every recording: a live recording is read from where the previous pass
//! stopped (asciicast and statement-log lines are independent, so new complete lines are
//! parsed after the header), and an ended session is judged once, when its end has settled
//! (its recording sealed and verified then). `gatehouse check` reads everything afresh.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use gatehouse_core::detective::Timeline;

/// How long after its end a session is judged (its recording is sealed just after the row
/// is closed).
pub const SETTLE_MS: i64 = 5_000;

#[derive(Default)]
pub struct Cache {
    /// Live recordings, by session id.
    pub tails: HashMap<String, Tail>,
    /// Ended sessions already judged.
    pub judged: HashSet<String>,
}

/// A live recording read up to `offset`.
pub struct Tail {
    path: PathBuf,
    header: Vec<u8>,
    offset: u64,
    /// The file's length when it was last read: an idle session's recording is not opened
    /// again until it grows (a `stat` instead of open, seek, read and close for each of a
    /// node's thousands of idle sessions every pass).
    read_len: Option<u64>,
    /// What was read, summarized ([`Timeline::summarized`]: a live session's rules read
    /// only its state), so it stays a few events long however long the session runs.
    pub timeline: Timeline,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            header: Vec::new(),
            offset: 0,
            read_len: None,
            timeline: Timeline::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the complete lines written since the last call.
    pub fn read_more(
        &mut self,
        parse: impl Fn(&Path, &[u8]) -> Result<Timeline, String>,
    ) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let len = std::fs::metadata(&self.path).map_err(err)?.len();
        if self.read_len == Some(len) {
            return Ok(());
        }
        let mut f = std::fs::File::open(&self.path).map_err(err)?;
        f.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(err)?;
        self.read_len = Some(self.offset + buf.len() as u64);
        let Some(last) = buf.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let complete = &buf[..=last];
        if self.header.is_empty() {
            let first = complete.iter().position(|b| *b == b'\n').unwrap_or(last);
            self.header = complete[..first].to_vec();
            self.timeline = parse(&self.path, complete)?;
        } else {
            let mut bytes = self.header.clone();
            bytes.push(b'\n');
            bytes.extend_from_slice(complete);
            let more = parse(&self.path, &bytes)?;
            self.timeline.events.extend(more.events);
        }
        self.timeline = self.timeline.summarized();
        self.offset += complete.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::detective::{Mark, Recorded};

    /// Every line after the header becomes an activity at its number (each noted in
    /// `seen`); the header must lead.
    fn parse<'a>(
        seen: &'a std::cell::RefCell<Vec<i64>>,
    ) -> impl Fn(&Path, &[u8]) -> Result<Timeline, String> + 'a {
        move |_, bytes| {
            let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
            let mut lines = text.lines();
            if lines.next() != Some("HEADER") {
                return Err("no header".into());
            }
            let events = lines
                .map(|l| {
                    let at = l.parse().map_err(|_| format!("bad line {l:?}"))?;
                    seen.borrow_mut().push(at);
                    Ok(Recorded {
                        at,
                        mark: Mark::Activity("input"),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(Timeline { events })
        }
    }

    /// A recording file `name` being written (in a temp dir kept alive by the first), and
    /// a tail of it.
    fn recording(name: &str) -> (tempfile::TempDir, std::fs::File, Tail) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let f = std::fs::File::create(&path).unwrap();
        let tail = Tail::new(&path);
        (dir, f, tail)
    }

    #[test]
    fn a_live_recording_is_read_from_where_the_last_pass_stopped() {
        use std::io::Write;
        let (_dir, mut f, mut tail) = recording("s.cast");
        let seen = std::cell::RefCell::new(Vec::new());
        f.write_all(b"HEAD").unwrap();
        tail.read_more(parse(&seen)).unwrap();
        assert!(seen.borrow().is_empty());
        f.write_all(b"ER\n1\n2\n3").unwrap();
        tail.read_more(parse(&seen)).unwrap();
        assert_eq!(*seen.borrow(), [1, 2]);
        assert_eq!(tail.timeline.state().last_activity, 2);
        // the line cut short is read whole once it is complete
        f.write_all(b"0\n40\n").unwrap();
        tail.read_more(parse(&seen)).unwrap();
        assert_eq!(*seen.borrow(), [1, 2, 30, 40]);
        tail.read_more(parse(&seen)).unwrap();
        assert_eq!(*seen.borrow(), [1, 2, 30, 40]);
        assert_eq!(tail.timeline.state().last_activity, 40);
    }

    /// A busy session's tail does not grow with its recording: 10,000 statements later it
    /// holds what the rules read (the last activity, the lock in force), not every event.
    #[test]
    fn a_busy_live_recording_s_tail_stays_small() {
        use std::io::Write;
        let (_dir, mut f, mut tail) = recording("s.sql.jsonl");
        let seen = std::cell::RefCell::new(Vec::new());
        f.write_all(b"HEADER\n").unwrap();
        for pass in 0..10 {
            for i in 0..1000 {
                writeln!(f, "{}", pass * 1000 + i + 1).unwrap();
            }
            tail.read_more(parse(&seen)).unwrap();
            assert!(tail.timeline.events.len() <= 2, "{:?}", tail.timeline);
        }
        assert_eq!(seen.borrow().len(), 10_000);
        assert_eq!(tail.timeline.state().last_activity, 10_000);
    }
}
