//! The PostgreSQL front's statement log (`<session>.sql.jsonl`): the line types, written by
//! the front and read back by the review TUI and the detective with the same structs.
//!
//! Line 0 is a [`SqlLogHeader`]; each further line is a [`StatementLine`], a
//! [`MarkerLine`] (enforcement events, and messages refused rather than relayed) or a
//! [`TargetLine`] (which server process the session ran on) with `t`, seconds since the
//! session opened. The log is hash-chained like a terminal recording, so
//! the bytes of every line matter: fields are declared in alphabetical order because the
//! front wrote these lines as `serde_json` maps (sorted keys) before these types existed,
//! and serde writes a struct's fields in declaration order. Readers are tolerant: every
//! field but `t` and `type` may be missing (older logs), unknown fields and line types are
//! ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The header's `gatehouse_sql_log` value this version writes and reads.
pub const SQL_LOG_VERSION: u32 = 1;

/// The first line of a statement log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlLogHeader {
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    pub gatehouse_sql_log: u32,
    pub operator: String,
    #[serde(default)]
    pub redact_params: bool,
    pub session: String,
    /// Startup parameters passed through to the target (they can change what statements
    /// do: `options=-c search_path=…`).
    #[serde(default)]
    pub startup_params: BTreeMap<String, String>,
    pub target: String,
    /// Unix seconds.
    #[serde(default)]
    pub timestamp: Option<i64>,
}

/// `"type": "statement"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatementType {
    #[serde(rename = "statement")]
    Statement,
}

/// `"type": "marker"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarkerType {
    #[serde(rename = "marker")]
    Marker,
}

/// `"type": "target"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetType {
    #[serde(rename = "target")]
    Target,
}

/// The target connection the session's statements ran on, written once Gatehouse's login to
/// the target is done: the server's process id (`pg_backend_pid()`, `%p` in the server's
/// own log lines) and whether the login was kept from an earlier session (`[postgres]
/// target_pool`), so that the server's logs can be matched to sessions (readers that
/// predate it skip the line as an unknown type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetLine {
    pub backend_pid: i32,
    pub reused: bool,
    pub t: f64,
    #[serde(rename = "type")]
    pub kind: TargetType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlError {
    pub message: String,
    pub sqlstate: String,
}

/// One statement (a simple query, or an extended-protocol portal run however many Executes
/// it took).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementLine {
    #[serde(default)]
    pub duration_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<SqlError>,
    /// Extended protocol: Executes of the portal (more than 1 when read in pieces, e.g. a
    /// JDBC fetch size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<u64>,
    /// Set (with `redacted`) when the parameters were redacted by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_count: Option<u64>,
    #[serde(default)]
    pub params: Option<Vec<Option<String>>>,
    /// `simple` or `extended`.
    #[serde(default = "simple")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub redacted: bool,
    /// DataRows returned.
    #[serde(default)]
    pub rows: u64,
    /// Prepared statement name (extended protocol only).
    #[serde(default, rename = "statement", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extended protocol: the portal was left unfinished (`tag` is then null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    pub t: f64,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub text: String,
    #[serde(rename = "type")]
    pub kind: StatementType,
}

/// A message that was not relayed: its direction, type byte and declared length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub from: String,
    pub length: i64,
    pub message_type: String,
    pub sqlstate: String,
}

/// An enforcement event or a refused message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkerLine {
    #[serde(default)]
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    pub t: f64,
    #[serde(rename = "type")]
    pub kind: MarkerType,
}

/// A line after the header, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlLogLine {
    Statement(StatementLine),
    Marker(MarkerLine),
    Target(TargetLine),
    /// A line type this version does not know (ignored).
    Other {
        t: f64,
        kind: String,
    },
}

/// What every line has: its time and type (other fields skipped, not kept).
#[derive(Deserialize)]
struct LineHead<'a> {
    t: f64,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
}

impl SqlLogLine {
    /// One line; `None` if it is not a log line at all (malformed JSON, no `t` or `type`,
    /// a statement or marker that does not parse as one, a time that is not a finite
    /// non-negative number).
    ///
    /// Read in two passes rather than as an untagged enum: serde reads an untagged enum by
    /// copying the whole line into a generic tree first and trying each variant on it,
    /// several times what reading the struct the type names costs (the detective reads
    /// every line of every live log, a statement per round trip).
    ///
    /// A line is a JSON object: serde would also read a struct from an array of its fields
    /// in order, which no writer produces.
    pub fn parse(line: &[u8]) -> Option<SqlLogLine> {
        if line.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let head: LineHead<'_> = serde_json::from_slice(line).ok()?;
        if !(head.t.is_finite() && head.t >= 0.0) {
            return None;
        }
        match head.kind.as_ref() {
            "statement" => serde_json::from_slice(line).ok().map(SqlLogLine::Statement),
            "marker" => serde_json::from_slice(line).ok().map(SqlLogLine::Marker),
            "target" => serde_json::from_slice(line).ok().map(SqlLogLine::Target),
            _ => Some(SqlLogLine::Other {
                t: head.t,
                kind: head.kind.into_owned(),
            }),
        }
    }
}

/// Seconds as written in `t` (microsecond precision).
pub fn seconds(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1e6
}

fn simple() -> String {
    "simple".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The target line: its bytes (fields in alphabetical order, as every line's), read
    /// back as written (readers that predate it skip it as a line type they do not know).
    #[test]
    fn target_lines_are_written_sorted_and_read_back() {
        let written = TargetLine {
            backend_pid: 4242,
            reused: true,
            t: 0.5,
            kind: TargetType::Target,
        };
        let line = serde_json::to_string(&written).unwrap();
        assert_eq!(
            line,
            r#"{"backend_pid":4242,"reused":true,"t":0.5,"type":"target"}"#
        );
        assert_eq!(
            SqlLogLine::parse(line.as_bytes()),
            Some(SqlLogLine::Target(written))
        );
        // a target line that is not one is not a log line
        assert_eq!(
            SqlLogLine::parse(br#"{"backend_pid":"x","t":0.5,"type":"target"}"#),
            None
        );
    }

    /// Lines as the front wrote them before these types existed (through `json!` maps):
    /// serializing what they parse to gives the same bytes.
    #[test]
    fn lines_round_trip_byte_for_byte() {
        let line = r#"{"database":"shop","environment":"prod","gatehouse_sql_log":1,"operator":"dave","redact_params":false,"session":"0190","startup_params":{"application_name":"psql","options":"-c x=1"},"target":"db1","timestamp":1764000000}"#;
        let h: SqlLogHeader = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_string(&h).unwrap(), line);
        for line in [
            r#"{"duration_ms":0.42,"error":null,"executions":1,"params":["42",null],"protocol":"extended","rows":1,"statement":"s1","suspended":false,"t":1.234567,"tag":"SELECT 1","text":"select $1","type":"statement"}"#,
            r#"{"duration_ms":3.0,"error":{"message":"relation \"x\" does not exist","sqlstate":"42P01"},"params":null,"protocol":"simple","rows":0,"t":2.0,"tag":null,"text":"select * from x","type":"statement"}"#,
            r#"{"duration_ms":0.1,"error":null,"executions":201,"param_count":2,"params":null,"protocol":"extended","redacted":true,"rows":20000,"suspended":true,"t":3.5,"tag":null,"text":"select","type":"statement"}"#,
        ] {
            let Some(SqlLogLine::Statement(s)) = SqlLogLine::parse(line.as_bytes()) else {
                panic!("{line}");
            };
            assert_eq!(serde_json::to_string(&s).unwrap(), line);
        }
        for line in [
            r#"{"label":"warning: idle","t":4.0,"type":"marker"}"#,
            r#"{"label":"refused from the client: x","refused":{"from":"client","length":70000000,"message_type":"Q","sqlstate":"54000"},"t":5.25,"type":"marker"}"#,
        ] {
            let Some(SqlLogLine::Marker(m)) = SqlLogLine::parse(line.as_bytes()) else {
                panic!("{line}");
            };
            assert_eq!(serde_json::to_string(&m).unwrap(), line);
        }
    }

    /// The reading as an untagged enum this replaced (serde tries each variant in turn).
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Statement(StatementLine),
        Marker(MarkerLine),
        Other {
            t: f64,
            #[serde(rename = "type")]
            kind: String,
        },
    }

    fn untagged(line: &[u8]) -> Option<SqlLogLine> {
        let (t, l) = match serde_json::from_slice(line).ok()? {
            Untagged::Statement(s) => (s.t, SqlLogLine::Statement(s)),
            Untagged::Marker(m) => (m.t, SqlLogLine::Marker(m)),
            Untagged::Other { kind, .. } if kind == "statement" || kind == "marker" => {
                return None;
            }
            Untagged::Other { t, kind } => (t, SqlLogLine::Other { t, kind }),
        };
        (t.is_finite() && t >= 0.0).then_some(l)
    }

    /// The two-pass reading accepts and rejects exactly what the untagged enum did (JSON
    /// objects; arrays are no longer read as structs): every line of the tests here, and
    /// thousands of variants of them with fields dropped, retyped, duplicated or cut short.
    #[test]
    fn two_pass_reading_is_the_untagged_reading() {
        let base = [
            r#"{"duration_ms":0.42,"error":null,"executions":1,"params":["42",null],"protocol":"extended","rows":1,"statement":"s1","suspended":false,"t":1.234567,"tag":"SELECT 1","text":"select $1","type":"statement"}"#,
            r#"{"duration_ms":3.0,"error":{"message":"x","sqlstate":"42P01"},"params":null,"protocol":"simple","rows":0,"t":2.0,"tag":null,"text":"select \"a\"","type":"statement"}"#,
            r#"{"label":"refused from the client: x","refused":{"from":"client","length":7,"message_type":"Q","sqlstate":"54000"},"t":5.25,"type":"marker"}"#,
            r#"{"label":"warning: idle","t":4.0,"type":"marker"}"#,
            r#"{"t":1,"type":"future","x":[1]}"#,
            r#"{"t":1,"type":"stat\u0065ment","text":"x"}"#,
            r#"{"type":"marker","t":1e400}"#,
            r#"{"t":1,"t":2,"type":"marker"}"#,
            r#"{"t":1,"type":"statement","rows":-1}"#,
            r#"{"t":"1","type":"statement"}"#,
            r#"{"t":1,"type":7}"#,
            r#"  {"t":0,"type":"marker"}"#,
        ];
        let mut seen = 0;
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let replacements: [&[u8]; 10] = [
            b"",
            b"null",
            b"1",
            b"-1",
            b"\"",
            b",",
            b"{}",
            b"[]",
            b"\"marker\"",
            b"\"statement\"",
        ];
        for line in base {
            let line = line.as_bytes();
            assert_eq!(
                SqlLogLine::parse(line),
                untagged(line),
                "{}",
                String::from_utf8_lossy(line)
            );
            for _ in 0..2_000 {
                let mut v = line.to_vec();
                // replace a random span by a random token, or cut the line short
                let a = next(v.len());
                let b = (a + next(12)).min(v.len());
                if next(8) == 0 {
                    v.truncate(a);
                } else {
                    v.splice(a..b, replacements[next(replacements.len())].iter().copied());
                }
                if v.trim_ascii_start().first() == Some(&b'[') {
                    assert_eq!(SqlLogLine::parse(&v), None);
                    continue;
                }
                let (new, old) = (SqlLogLine::parse(&v), untagged(&v));
                seen += usize::from(new.is_some());
                assert_eq!(new, old, "{}", String::from_utf8_lossy(&v));
            }
        }
        assert!(seen > 1_000, "too few variants parse at all: {seen}");
    }

    #[test]
    fn unknown_lines_are_other_and_malformed_ones_none() {
        assert!(matches!(
            SqlLogLine::parse(br#"{"t":1,"type":"future","x":[1]}"#),
            Some(SqlLogLine::Other { .. })
        ));
        assert!(matches!(
            SqlLogLine::parse(br#"{"t":1,"type":"statement"}"#),
            Some(SqlLogLine::Statement(s)) if s.protocol == "simple" && s.text.is_empty()
        ));
        for bad in [
            &br#"{"t":-1,"type":"statement"}"#[..],
            br#"{"t":1,"type":"statement","text":5}"#,
            br#"{"t":1,"type":"marker","label":[]}"#,
            br#"{"type":"marker"}"#,
            br#"["x",null,1,"marker"]"#,
            b"\x00",
        ] {
            assert_eq!(
                SqlLogLine::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
