//! Reading a PostgreSQL session's statement log (`<session>.sql.jsonl`, written by the
//! PostgreSQL front): a JSON header line, then one JSON object per statement or marker,
//! read with the recorder's line types (the writer's own). Same tolerance as the asciicast
//! reader: a last line cut short and unknown line types are not errors.

use std::time::Duration;

use gatehouse_recorder::sql_log::{LineMark, SQL_LOG_VERSION, SqlLogLine, StatementLine};
pub use gatehouse_recorder::sql_log::{SqlError, SqlLogHeader as SqlHeader, TargetLine};

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub at: Duration,
    /// `simple` or `extended`.
    pub protocol: String,
    /// Prepared statement name (extended protocol only).
    pub name: Option<String>,
    pub text: String,
    pub params: Option<Vec<Option<String>>>,
    /// Set when parameters were redacted by policy.
    pub param_count: Option<u32>,
    pub redacted: bool,
    pub duration_ms: Option<f64>,
    pub tag: Option<String>,
    pub error: Option<SqlError>,
}

/// A statement or a marker, in log order.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlEntry {
    Statement(Statement),
    Marker { at: Duration, label: String },
}

impl SqlEntry {
    pub fn at(&self) -> Duration {
        match self {
            SqlEntry::Statement(s) => s.at,
            SqlEntry::Marker { at, .. } => *at,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlLog {
    pub header: SqlHeader,
    /// The server process the session ran on (the log's `target` line); absent in logs
    /// written before the line existed (and until a live log has it).
    pub target: Option<TargetLine>,
    pub entries: Vec<SqlEntry>,
    pub truncated: bool,
    pub skipped: usize,
}

/// The tag as shown: a portal left suspended says so, one read in pieces says how.
fn shown_tag(line: &StatementLine) -> Option<String> {
    let rows = line.rows;
    let tag = match &line.tag {
        None if line.suspended == Some(true) => Some(format!("suspended after {rows} rows")),
        t => t.clone(),
    };
    match line.executions {
        Some(n) if n > 1 => Some(format!(
            "{} ({n} executions, {rows} rows)",
            tag.unwrap_or_default()
        )),
        _ => tag,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SqlLogError {
    #[error("statement log is empty")]
    Empty,
    #[error("statement log header is not a gatehouse SQL log header: {0}")]
    Header(String),
}

enum Line {
    Entry(Box<SqlEntry>),
    Target(TargetLine),
    Ignored,
    Bad,
}

fn parse_line(line: &[u8]) -> Line {
    match SqlLogLine::parse(line) {
        None => Line::Bad,
        Some(SqlLogLine::Statement(l)) => {
            let tag = shown_tag(&l);
            Line::Entry(Box::new(SqlEntry::Statement(Statement {
                at: at(l.t),
                protocol: l.protocol,
                name: l.name.filter(|s| !s.is_empty()),
                text: l.text,
                params: l.params,
                param_count: l.param_count.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
                redacted: l.redacted,
                duration_ms: l.duration_ms,
                tag,
                error: l.error,
            })))
        }
        Some(SqlLogLine::Marker(m)) => Line::Entry(Box::new(SqlEntry::Marker {
            at: at(m.t),
            label: m.label,
        })),
        Some(SqlLogLine::Target(l)) => Line::Target(l),
        Some(SqlLogLine::Other { .. }) => Line::Ignored,
    }
}

/// What a statement log says happened when, for readers that need no statement's text
/// (the detective): see [`SqlLog::marks`].
#[derive(Debug, Clone, PartialEq)]
pub enum SqlMark {
    Statement(Duration),
    Marker { at: Duration, label: String },
}

/// A line's `t` as a time since the session opened.
fn at(t: f64) -> Duration {
    Duration::from_secs_f64(t.min(1e12))
}

/// A statement log's header, the complete lines after it, and its last line if unfinished.
type Split<'a> = (SqlHeader, Vec<&'a [u8]>, Option<&'a [u8]>);

/// The header, checked; the complete lines after it, and the last line if it is unfinished.
fn split(bytes: &[u8]) -> Result<Split<'_>, SqlLogError> {
    // `bytes.split` on newlines, found by memchr rather than a byte at a time
    let mut pieces = Vec::new();
    let mut start = 0;
    for newline in memchr::memchr_iter(b'\n', bytes) {
        pieces.push(&bytes[start..newline]);
        start = newline + 1;
    }
    pieces.push(&bytes[start..]);
    let mut lines = pieces.into_iter();
    let first = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or(SqlLogError::Empty)?;
    let header: SqlHeader =
        serde_json::from_slice(first).map_err(|e| SqlLogError::Header(e.to_string()))?;
    if header.gatehouse_sql_log != SQL_LOG_VERSION {
        return Err(SqlLogError::Header(format!(
            "version {}",
            header.gatehouse_sql_log
        )));
    }
    let complete = bytes.last() == Some(&b'\n');
    let mut rest: Vec<&[u8]> = lines.filter(|l| !l.is_empty()).collect();
    let last = if complete { None } else { rest.pop() };
    Ok((header, rest, last))
}

impl SqlLog {
    pub fn parse(bytes: &[u8]) -> Result<SqlLog, SqlLogError> {
        let (header, rest, last) = split(bytes)?;
        let mut log = SqlLog {
            header,
            target: None,
            entries: vec![],
            truncated: false,
            skipped: 0,
        };
        for line in rest {
            match parse_line(line) {
                Line::Entry(e) => log.entries.push(*e),
                Line::Target(t) => log.target = Some(t),
                Line::Ignored => {}
                Line::Bad => log.skipped += 1,
            }
        }
        if let Some(last) = last {
            match parse_line(last) {
                Line::Entry(e) => log.entries.push(*e),
                Line::Target(t) => log.target = Some(t),
                Line::Ignored => {}
                Line::Bad => log.truncated = true,
            }
        }
        Ok(log)
    }

    /// The times of the statements and the markers, in log order: [`SqlLog::parse`]'s
    /// entries, the same lines read and skipped, without copying any statement (the
    /// detective reads every line of every live log on every pass).
    pub fn marks(bytes: &[u8]) -> Result<Vec<SqlMark>, SqlLogError> {
        let (_, rest, last) = split(bytes)?;
        Ok(rest
            .into_iter()
            .chain(last)
            .filter_map(|line| match LineMark::parse(line)? {
                LineMark::Statement { t } => Some(SqlMark::Statement(at(t))),
                LineMark::Marker(m) => Some(SqlMark::Marker {
                    at: at(m.t),
                    label: m.label,
                }),
                LineMark::Target { .. } | LineMark::Other { .. } => None,
            })
            .collect())
    }

    /// Adds the complete lines a live statement log gained (see [`crate::follow::Tail`]);
    /// returns how many entries were added.
    pub fn extend(&mut self, lines: &[u8]) -> usize {
        let before = self.entries.len();
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match parse_line(line) {
                Line::Entry(e) => self.entries.push(*e),
                Line::Target(t) => self.target = Some(t),
                Line::Ignored => {}
                Line::Bad => self.skipped += 1,
            }
        }
        self.entries.len() - before
    }

    pub fn statements(&self) -> impl Iterator<Item = &Statement> {
        self.entries.iter().filter_map(|e| match e {
            SqlEntry::Statement(s) => Some(s),
            SqlEntry::Marker { .. } => None,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub const SAMPLE: &str = include_str!("../tests/fixtures/orders.sql.jsonl");

    #[test]
    fn reads_statements_markers_errors_and_redactions() {
        let log = SqlLog::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(log.header.operator, "dave");
        assert_eq!(log.entries.len(), 6);
        let st: Vec<_> = log.statements().collect();
        assert_eq!(st.len(), 4);
        assert_eq!(st[1].name.as_deref(), Some("s1"));
        assert_eq!(st[1].params, Some(vec![Some("42".into()), None]));
        assert_eq!(st[2].error.as_ref().unwrap().sqlstate, "42P01");
        assert!(st[3].redacted);
        assert_eq!(st[3].param_count, Some(2));
        assert!(
            matches!(&log.entries[2], SqlEntry::Marker { label, .. } if label.starts_with("warning"))
        );
    }

    /// The `target` line names the server process, whole or as a live log grows; it is
    /// not an entry of the table, and a log without one (older) has none.
    #[test]
    fn the_target_line_names_the_server_process() {
        let head = format!("{}\n", SAMPLE.lines().next().unwrap());
        let line = r#"{"backend_pid":4242,"reused":true,"t":0.001,"type":"target"}"#;
        let whole = SqlLog::parse(format!("{head}{line}\n").as_bytes()).unwrap();
        let expected = Some(TargetLine {
            backend_pid: 4242,
            reused: true,
            t: 0.001,
            kind: gatehouse_recorder::sql_log::TargetType::Target,
        });
        assert_eq!(whole.target, expected);
        assert!(whole.entries.is_empty());
        let mut live = SqlLog::parse(head.as_bytes()).unwrap();
        assert_eq!(live.target, None);
        assert_eq!(live.extend(format!("{line}\n").as_bytes()), 0);
        assert_eq!(live.target, expected);
        assert_eq!(SqlLog::parse(SAMPLE.as_bytes()).unwrap().target, None);
    }

    #[test]
    fn portals_read_in_pieces_show_how() {
        let log = |line: &str| {
            let text = format!("{}\n{line}\n", SAMPLE.lines().next().unwrap());
            let log = SqlLog::parse(text.as_bytes()).unwrap();
            log.statements().next().unwrap().tag.clone()
        };
        assert_eq!(
            log(r#"{"t":1,"type":"statement","text":"select","tag":"SELECT 0","executions":201,"rows":20000}"#).as_deref(),
            Some("SELECT 0 (201 executions, 20000 rows)")
        );
        assert_eq!(
            log(r#"{"t":1,"type":"statement","text":"select","tag":null,"executions":1,"rows":100,"suspended":true}"#).as_deref(),
            Some("suspended after 100 rows")
        );
        assert_eq!(
            log(r#"{"t":1,"type":"statement","text":"select","tag":"SELECT 1","executions":1,"rows":1}"#).as_deref(),
            Some("SELECT 1")
        );
    }

    #[test]
    fn a_live_log_grows_by_complete_lines() {
        let mut lines = SAMPLE.lines();
        let head = format!("{}\n", lines.next().unwrap());
        let mut log = SqlLog::parse(head.as_bytes()).unwrap();
        assert!(log.entries.is_empty());
        let rest: String = lines.map(|l| format!("{l}\n")).collect();
        assert_eq!(log.extend(rest.as_bytes()), 6);
        assert_eq!(log.statements().count(), 4);
    }

    #[test]
    fn a_cut_last_line_is_truncated_and_junk_never_panics() {
        let cut = &SAMPLE[..SAMPLE.len() - 20];
        let log = SqlLog::parse(cut.as_bytes()).unwrap();
        assert!(log.truncated);
        assert_eq!(log.entries.len(), 5);
        assert!(SqlLog::parse(b"").is_err());
        assert!(SqlLog::parse(b"{\"version\":2}\n").is_err());
        let junk = format!(
            "{}\n{{\"t\":-1,\"type\":\"statement\"}}\n\u{0}\n{{\"t\":1,\"type\":\"future\"}}\n",
            SAMPLE.lines().next().unwrap()
        );
        let log = SqlLog::parse(junk.as_bytes()).unwrap();
        assert_eq!((log.entries.len(), log.skipped), (0, 2));
    }

    /// The marks are the entries, in order, whatever the log: whole, cut at every byte,
    /// with junk, unknown and target lines among them; a bad header is the same error.
    #[test]
    fn marks_are_the_entries_times_and_markers() {
        let marks_of = |log: &SqlLog| -> Vec<SqlMark> {
            log.entries
                .iter()
                .map(|e| match e {
                    SqlEntry::Statement(s) => SqlMark::Statement(s.at),
                    SqlEntry::Marker { at, label } => SqlMark::Marker {
                        at: *at,
                        label: label.clone(),
                    },
                })
                .collect()
        };
        let head = SAMPLE.lines().next().unwrap();
        let noisy = format!(
            "{SAMPLE}{{\"t\":-1,\"type\":\"statement\"}}\n\u{0}\n{{\"t\":1,\"type\":\"future\"}}\n{}\n{{\"t\":9,\"type\":\"statement\",\"rows\":\"x\"}}\n{{\"label\":\"locked: idle\",\"t\":9.5,\"type\":\"marker\"}}\n",
            r#"{"backend_pid":1,"reused":false,"t":0.1,"type":"target"}"#
        );
        for text in [SAMPLE, noisy.as_str()] {
            for cut in head.len()..=text.len() {
                let bytes = &text.as_bytes()[..cut];
                let log = SqlLog::parse(bytes).unwrap();
                assert_eq!(
                    SqlLog::marks(bytes).unwrap(),
                    marks_of(&log),
                    "cut at {cut}"
                );
            }
        }
        let whole = SqlLog::marks(noisy.as_bytes()).unwrap();
        assert_eq!(whole.len(), 7);
        for bad in [
            &b""[..],
            b"{\"version\":2}\n",
            b"{\"gatehouse_sql_log\":9}\n",
        ] {
            assert_eq!(
                SqlLog::marks(bad).map(|_| ()),
                SqlLog::parse(bad).map(|_| ())
            );
            assert!(SqlLog::marks(bad).is_err());
        }
    }
}
