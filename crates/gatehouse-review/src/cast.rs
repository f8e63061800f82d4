//! Reading asciicast v2 recordings (what the recorder writes) into memory.
//!
//! A parser over bytes, never a file handle: the caller reads the file. It tolerates what a
//! crash leaves behind (a last line cut short) and what a reader must ignore (unknown event
//! codes), and never panics on hostile input. The header and event lines are the
//! recorder's model ([`CastHeader`], [`EventLine`], [`Code`]), shared with the writer.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

pub use gatehouse_recorder::CastHeader;
use gatehouse_recorder::format::{MODE_NO_PTY, MODE_PTY};
use gatehouse_recorder::{Code, EventLine, PTY_KEY};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Output,
    Input,
    Resize { cols: u16, rows: u16 },
    Marker,
}

/// One event; its text lives in [`Cast::text`] at `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: Duration,
    pub kind: EventKind,
    pub data: Range<usize>,
    /// Output of a channel that had a pty (see [`Cast::shown`]); true for other kinds.
    pub pty: bool,
}

/// A whole recording in memory: events point into one text buffer (a 100 MiB recording is
/// one allocation, not millions).
#[derive(Debug, Clone)]
pub struct Cast {
    /// `width` and `height` as the player uses them (see [`Cast::parse`]).
    pub header: CastHeader,
    pub events: Vec<Event>,
    text: String,
    /// The last line was cut short (the broker died mid-write).
    pub truncated: bool,
    /// Lines that were not events (malformed JSON, bad resize); skipped, not fatal.
    pub skipped: usize,
    /// Whether output events from here on come from a pty (while parsing).
    pty: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CastError {
    #[error("recording is empty")]
    Empty,
    #[error("recording header is not an asciicast v2 header: {0}")]
    Header(String),
}

impl Cast {
    /// Parses a recording. Only a bad header is an error.
    pub fn parse(bytes: &[u8]) -> Result<Cast, CastError> {
        let mut lines = bytes.split(|b| *b == b'\n');
        let header_line = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or(CastError::Empty)?;
        let mut header =
            CastHeader::parse(header_line).map_err(|e| CastError::Header(e.to_string()))?;
        if header.version != 2 {
            return Err(CastError::Header(format!("version {}", header.version)));
        }
        // Recordings made before the recorder wrote the effective size say 0×0 for
        // `ssh -tt` with stdin not a terminal: the same fallback as the recorder's. The
        // player's screen is at most 65535 wide or high.
        let (width, height) = gatehouse_recorder::effective_size(header.width, header.height);
        header.width = width.min(u32::from(u16::MAX));
        header.height = height.min(u32::from(u16::MAX));
        let pty = first_channel_had_pty(&header);
        let mut cast = Cast {
            header,
            events: Vec::new(),
            text: String::new(),
            truncated: false,
            skipped: 0,
            pty,
        };
        let ends_with_newline = bytes.last() == Some(&b'\n');
        let mut rest: Vec<&[u8]> = lines.collect();
        let last = if ends_with_newline { None } else { rest.pop() };
        for line in rest {
            if !line.is_empty() && !cast.push_line(line) {
                cast.skipped += 1;
            }
        }
        if let Some(last) = last.filter(|l| !l.is_empty()) {
            // a final line without its newline is an event cut short by a crash, unless it
            // happens to be complete
            if !cast.push_line(last) {
                cast.truncated = true;
            }
        }
        Ok(cast)
    }

    /// Adds the complete lines a live recording gained (see [`crate::follow::Tail`]);
    /// returns how many events were added.
    pub fn extend(&mut self, lines: &[u8]) -> usize {
        let before = self.events.len();
        for line in lines.split(|b| *b == b'\n') {
            if !line.is_empty() && !self.push_line(line) {
                self.skipped += 1;
            }
        }
        self.events.len() - before
    }

    fn push_line(&mut self, line: &[u8]) -> bool {
        let Some(line) = EventLine::parse(line) else {
            return false;
        };
        let at = line.at();
        let data = line.data();
        let kind = match line.code() {
            Some(Code::Output) => EventKind::Output,
            Some(Code::Input) => EventKind::Input,
            Some(Code::Marker) => EventKind::Marker,
            Some(Code::Resize) => match parse_size(data) {
                Some((cols, rows)) => EventKind::Resize { cols, rows },
                None => return false,
            },
            Some(Code::TerminalMode) => {
                // Gatehouse's terminal mode of the output that follows
                match data {
                    MODE_PTY => self.pty = true,
                    MODE_NO_PTY => self.pty = false,
                    _ => return false,
                }
                return true;
            }
            None => return true, // readers ignore unknown codes
        };
        // times never go backwards in what the recorder writes; keep it so for seeking
        let at = self.events.last().map_or(at, |e| e.at.max(at));
        let start = self.text.len();
        self.text.push_str(data);
        self.events.push(Event {
            at,
            kind,
            data: start..self.text.len(),
            pty: self.pty || kind != EventKind::Output,
        });
        true
    }

    /// The screen size the player starts with (columns, rows).
    pub fn size(&self) -> (u16, u16) {
        let dim = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        (dim(self.header.width), dim(self.header.height))
    }

    pub fn data(&self, e: &Event) -> &str {
        self.text.get(e.data.clone()).unwrap_or_default()
    }

    /// An event's text as the operator's terminal showed it: output of a channel without
    /// a pty has bare `\n` line ends, which the operator's terminal (its own tty, still in
    /// cooked mode) turned into `\r\n`. The player, the search text and `export --format
    /// txt` use this; `cast` and `json` exports stay byte-exact.
    pub fn shown(&self, e: &Event) -> Cow<'_, str> {
        let data = self.data(e);
        if e.pty || !data.contains('\n') {
            return Cow::Borrowed(data);
        }
        let mut out = String::with_capacity(data.len() + data.len() / 16);
        let mut prev = '\0';
        for c in data.chars() {
            if c == '\n' && prev != '\r' {
                out.push('\r');
            }
            out.push(c);
            prev = c;
        }
        Cow::Owned(out)
    }

    /// Time of the last event.
    pub fn duration(&self) -> Duration {
        self.events.last().map_or(Duration::ZERO, |e| e.at)
    }

    /// `(time, label)` of every marker.
    pub fn markers(&self) -> impl Iterator<Item = (Duration, &str)> {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Marker)
            .map(|e| (e.at, self.data(e)))
    }

    pub fn env(&self, key: &str) -> Option<&str> {
        self.header.env.get(key).map(String::as_str)
    }
}

/// Whether the recording's first channel had a pty. New recordings say so
/// ([`PTY_KEY`]); for older Gatehouse recordings (a `GATEHOUSE_FIRST_CHANNEL` but no
/// `GATEHOUSE_PTY`) the recorder wrote `TERM` exactly when the first channel had a pty
/// request, so a missing `TERM` means no pty. Recordings from elsewhere are taken as they
/// are (pty). Older recordings carry no per-channel mode: the first channel's applies to all.
fn first_channel_had_pty(h: &CastHeader) -> bool {
    let env = |key: &str| h.env.get(key).map(String::as_str);
    match env(PTY_KEY) {
        Some(v) => v != "no",
        None => env("GATEHOUSE_FIRST_CHANNEL").is_none() || env("TERM").is_some(),
    }
}

/// `"COLSxROWS"`.
pub fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (c, r) = s.split_once('x')?;
    let (c, r) = (c.trim().parse().ok()?, r.trim().parse().ok()?);
    (c > 0 && r > 0).then_some((c, r))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const HEADER: &str = r#"{"version": 2, "width": 80, "height": 24, "timestamp": 1764000000, "title": "alice → web1", "env": {"TERM": "xterm", "GATEHOUSE_ENVIRONMENT": "prod"}}"#;

    #[test]
    fn reads_events_of_every_code_and_ignores_unknown_ones() {
        let text = format!(
            "{HEADER}\n[0.5, \"o\", \"hi\\u001b[0m\\r\\n\"]\n[1.0, \"i\", \"ls\\r\"]\n[1.5, \"r\", \"100x30\"]\n[2.0, \"x\", \"exit\"]\n[2.5, \"m\", \"warning\"]\n"
        );
        let c = Cast::parse(text.as_bytes()).unwrap();
        assert_eq!(c.header.width, 80);
        assert_eq!(c.env("GATEHOUSE_ENVIRONMENT"), Some("prod"));
        let kinds: Vec<_> = c.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::Output,
                EventKind::Input,
                EventKind::Resize {
                    cols: 100,
                    rows: 30
                },
                EventKind::Marker
            ]
        );
        assert_eq!(c.data(&c.events[0]), "hi\u{1b}[0m\r\n");
        assert_eq!(
            c.markers().collect::<Vec<_>>(),
            vec![(Duration::from_millis(2500), "warning")]
        );
        assert!(!c.truncated);
        assert_eq!(c.skipped, 0);
        assert_eq!(c.duration(), Duration::from_millis(2500));
    }

    #[test]
    fn a_last_line_cut_short_is_truncated_not_an_error() {
        let text = format!("{HEADER}\n[0.5, \"o\", \"a\"]\n[0.7, \"o\", \"cut sh");
        let c = Cast::parse(text.as_bytes()).unwrap();
        assert_eq!(c.events.len(), 1);
        assert!(c.truncated);
        // a complete last line without newline is fine
        let text = format!("{HEADER}\n[0.5, \"o\", \"a\"]");
        assert!(!Cast::parse(text.as_bytes()).unwrap().truncated);
    }

    #[test]
    fn a_live_recording_grows_by_complete_lines() {
        let mut c = Cast::parse(format!("{HEADER}\n[0.5, \"o\", \"a\"]\n").as_bytes()).unwrap();
        assert_eq!(
            c.extend(b"[1.0, \"o\", \"b\"]\n[1.5, \"m\", \"warning\"]\n"),
            2
        );
        assert_eq!(c.duration(), Duration::from_millis(1500));
        assert_eq!(c.data(&c.events[1]), "b");
    }

    #[test]
    fn output_without_a_pty_is_shown_with_carriage_returns() {
        let no_pty = r#"{"version": 2, "width": 0, "height": 0, "env": {"GATEHOUSE_FIRST_CHANNEL": "exec: ls", "GATEHOUSE_PTY": "no"}}"#;
        let text = format!(
            "{no_pty}\n[0.1, \"o\", \"a\\nb\\r\\n\"]\n[0.2, \"i\", \"x\\n\"]\n[0.3, \"t\", \"pty\"]\n[0.4, \"o\", \"c\\n\"]\n[0.5, \"t\", \"bogus\"]\n"
        );
        let c = Cast::parse(text.as_bytes()).unwrap();
        assert_eq!((c.header.width, c.header.height), (80, 24), "0×0 is 80×24");
        let shown: Vec<_> = c.events.iter().map(|e| c.shown(e).into_owned()).collect();
        assert_eq!(shown, ["a\r\nb\r\n", "x\n", "c\n"]);
        assert_eq!(
            c.data(&c.events[0]),
            "a\nb\r\n",
            "the data stays as recorded"
        );
        assert_eq!(c.skipped, 1);
    }

    #[test]
    fn hostile_input_never_panics() {
        assert_eq!(Cast::parse(b"").unwrap_err(), CastError::Empty);
        assert!(Cast::parse(b"not json\n").is_err());
        assert!(Cast::parse(br#"{"version": 3, "width": 1, "height": 1}"#).is_err());
        let text = format!(
            "{HEADER}\n[-1, \"o\", \"a\"]\n[1e400, \"o\", \"b\"]\n[1, \"r\", \"0x0\"]\n[\"o\"]\n\u{0}\u{ff}\n[2, \"o\", \"ok\"]\n"
        );
        let c = Cast::parse(text.as_bytes()).unwrap();
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.skipped, 5);
        // a time going backwards is clamped
        let text = format!("{HEADER}\n[2, \"o\", \"a\"]\n[1, \"o\", \"b\"]\n");
        let c = Cast::parse(text.as_bytes()).unwrap();
        assert_eq!(c.events[1].at, Duration::from_secs(2));
    }
}
