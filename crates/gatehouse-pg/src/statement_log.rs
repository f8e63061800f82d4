//! The statement log of one SQL session: JSON lines under the recordings root
//! (`YYYY/MM/DD/<session>.sql.jsonl`), written by the same recorder task as terminal
//! recordings, so it has the same flushing, fail-closed and hash-chain guarantees and is
//! checked by the same `gatehouse recordings verify`.
//!
//! The line types are the recorder's (`gatehouse_recorder::sql_log`, where the format is
//! described), shared with the readers: a header, then statements and markers. An
//! extended-protocol statement has `executions` (Executes of its portal: more than 1 when
//! read in pieces, e.g. a JDBC fetch size) and `suspended` (true when the portal was left
//! unfinished; `tag` is then null).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gatehouse_pgproto::tracker::{Protocol, Statement};
use gatehouse_recorder::SQL_LOG_EXTENSION;
use gatehouse_recorder::file::{RecordingFile, relative_path_with};
use gatehouse_recorder::sql_log::{
    MarkerLine, MarkerType, Refusal, SQL_LOG_VERSION, SqlLogHeader, StatementLineRef, TargetLine,
    TargetType, seconds,
};
use gatehouse_recorder::{RecordError, RecorderHandle, Sealed, spawn_recorder, spawn_recorder_on};
use serde_json::Value;
use tokio::time::Instant;

use crate::relay::Refused;

pub(crate) struct LogHeader<'a> {
    pub(crate) session: &'a str,
    pub(crate) operator: &'a str,
    pub(crate) target: &'a str,
    pub(crate) environment: &'a str,
    pub(crate) database: &'a str,
    pub(crate) redact_params: bool,
    /// Startup parameters passed through to the target (they can change what statements
    /// do: `options=-c search_path=…`).
    pub(crate) startup_params: &'a [(String, String)],
}

/// Startup parameters as a JSON object (for the log header and the audit event).
pub(crate) fn params_json(params: &[(String, String)]) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect(),
    )
}

#[derive(Clone)]
pub(crate) struct StatementLog {
    handle: RecorderHandle,
    opened: Instant,
    redact: bool,
}

/// A statement waiting in the recorder's queue: its line is written by the recorder's task
/// (on the node's shared runtime), not by the relay, which only queues it.
struct QueuedStatement {
    s: Statement,
    redact: bool,
}

impl gatehouse_recorder::DeferredLine for QueuedStatement {
    fn len_hint(&self) -> usize {
        let s = &self.s;
        let params = s.params.as_deref().map_or(0, |p| {
            p.iter()
                .map(|v| v.as_deref().map_or(4, |v| v.len() + 3))
                .sum()
        });
        let tags: usize = s.tags.iter().map(|t| t.len() + 2).sum();
        let error = s.error.as_ref().map_or(0, |(c, m)| c.len() + m.len() + 32);
        // the fields' names, numbers and quotes: ~200 bytes
        s.text.len() + s.name.as_deref().map_or(0, str::len) + params + tags + error + 256
    }

    fn write_line(&self, out: &mut Vec<u8>) {
        write_statement_line(&self.s, self.redact, out);
    }
}

/// One statement as a log line, in a `String` (tests; the relay queues statements).
#[cfg(test)]
pub(crate) fn statement_line(s: Statement, redact: bool) -> String {
    let mut out = Vec::new();
    write_statement_line(&s, redact, &mut out);
    String::from_utf8(out).expect("statement lines are UTF-8")
}

/// One statement's log line, written at the end of `out` from the statement's own strings
/// (nothing moved or copied into an owned line first).
fn write_statement_line(s: &Statement, redact: bool, out: &mut Vec<u8>) {
    let extended = s.protocol == Protocol::Extended;
    let (params, param_count, redacted) = match &s.params {
        Some(p) if redact => (None, Some(p.len() as u64), true),
        Some(p) => (Some(&p[..]), None, false),
        None => (None, None, false),
    };
    let joined;
    let line = StatementLineRef {
        duration_ms: Some((s.duration.as_micros() as f64) / 1e3),
        error: s
            .error
            .as_ref()
            .map(|(sqlstate, message)| (message.as_str(), sqlstate.as_str())),
        executions: extended.then_some(u64::from(s.executions)),
        param_count,
        params,
        protocol: s.protocol.as_str(),
        redacted,
        rows: s.rows,
        name: s.name.as_deref(),
        suspended: extended.then_some(s.suspended),
        t: seconds(s.at),
        tag: match s.tags.as_slice() {
            [] => None,
            [one] => Some(one.as_str()),
            many => {
                joined = many.join("; ");
                Some(joined.as_str())
            }
        },
        text: &s.text,
    };
    line.write_json(out);
}

/// A log line (the line types are plain data: serializing cannot fail).
fn to_line(line: &impl serde::Serialize) -> String {
    serde_json::to_string(line).unwrap_or_default()
}

impl StatementLog {
    /// Creates the log and writes its header; `on_failure` runs once if a write fails later.
    /// The files are created on a blocking thread (the connection's thread runs other
    /// sessions' relays meanwhile).
    pub(crate) async fn create(
        root: &Path,
        started: SystemTime,
        opened: Instant,
        h: &LogHeader<'_>,
        runtime: Option<&tokio::runtime::Handle>,
        on_failure: impl FnOnce(String) + Send + 'static,
    ) -> Result<(StatementLog, PathBuf), RecordError> {
        let path = root.join(relative_path_with(h.session, started, SQL_LOG_EXTENSION));
        let timestamp = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = SqlLogHeader {
            database: Some(h.database.into()),
            environment: Some(h.environment.into()),
            gatehouse_sql_log: SQL_LOG_VERSION,
            operator: h.operator.into(),
            redact_params: h.redact_params,
            session: h.session.into(),
            startup_params: h.startup_params.iter().cloned().collect(),
            target: h.target.into(),
            timestamp: Some(i64::try_from(timestamp).unwrap_or(i64::MAX)),
        };
        let file = RecordingFile::create_at_blocking(path.clone(), to_line(&header)).await?;
        let handle = match runtime {
            Some(r) => spawn_recorder_on(r, file, opened, on_failure),
            None => spawn_recorder(file, opened, on_failure),
        };
        Ok((
            StatementLog {
                handle,
                opened,
                redact: h.redact_params,
            },
            path,
        ))
    }

    pub(crate) fn statement(&self, s: Statement) {
        gatehouse_session::metrics::statement_logged();
        self.handle.deferred_line(Box::new(QueuedStatement {
            s,
            redact: self.redact,
        }));
    }

    pub(crate) fn marker(&self, label: &str) {
        self.handle.line(to_line(&MarkerLine {
            label: label.into(),
            refused: None,
            t: seconds(self.opened.elapsed()),
            kind: MarkerType::Marker,
        }));
    }

    /// The target connection the session runs on (see `TargetLine`).
    pub(crate) fn target(&self, backend_pid: i32, reused: bool) {
        self.handle.line(to_line(&TargetLine {
            backend_pid,
            reused,
            t: seconds(self.opened.elapsed()),
            kind: TargetType::Target,
        }));
    }

    /// A message that was not relayed, as a marker naming its direction, type byte and
    /// declared length (also as fields, for tools).
    pub(crate) fn refused(&self, from: &str, r: &Refused) {
        self.handle.line(to_line(&MarkerLine {
            label: format!("refused from the {from}: {r}"),
            refused: Some(Refusal {
                from: from.into(),
                length: r.len,
                message_type: r.tag.to_string(),
                sqlstate: r.sqlstate.into(),
            }),
            t: seconds(self.opened.elapsed()),
            kind: MarkerType::Marker,
        }));
    }

    /// The log's recorder (for `gatehouse_session::recording_opened`).
    pub(crate) fn recorder(&self) -> &gatehouse_recorder::RecorderHandle {
        &self.handle
    }
}

impl gatehouse_session::MarkerSink for StatementLog {
    fn marker(&self, label: &str) {
        StatementLog::marker(self, label);
    }
}

impl gatehouse_session::SessionRecording for StatementLog {
    fn seal(
        &self,
    ) -> impl std::future::Future<Output = Option<Result<Sealed, RecordError>>> + Send {
        self.handle.seal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    /// The writer before the line types moved to the recorder (`json!` maps): the bytes
    /// are chained, so the typed writer must give the same ones.
    fn legacy_statement_line(s: &Statement, redact: bool) -> String {
        let mut v = json!({
            "t": seconds(s.at),
            "type": "statement",
            "protocol": s.protocol.as_str(),
            "text": s.text,
            "duration_ms": (s.duration.as_micros() as f64) / 1e3,
            "tag": (!s.tags.is_empty()).then(|| s.tags.join("; ")),
            "error": s.error.as_ref().map(|(code, message)| json!({"sqlstate": code, "message": message})),
        });
        v["rows"] = Value::from(s.rows);
        if s.protocol == Protocol::Extended {
            v["executions"] = Value::from(s.executions);
            v["suspended"] = Value::from(s.suspended);
        }
        if let Some(name) = &s.name {
            v["statement"] = Value::from(&**name);
        }
        match &s.params {
            Some(p) if redact => {
                v["params"] = Value::Null;
                v["param_count"] = Value::from(p.len());
                v["redacted"] = Value::from(true);
            }
            Some(p) => v["params"] = json!(p),
            None => v["params"] = Value::Null,
        }
        v.to_string()
    }

    #[test]
    fn lines_are_byte_for_byte_what_the_json_writer_wrote() {
        let base = Statement {
            at: Duration::from_micros(7_000_001),
            protocol: Protocol::Simple,
            name: None,
            text: "select 'é\u{1b}\"x\"'\n".into(),
            params: None,
            duration: Duration::from_micros(1_500_123),
            tags: vec!["SELECT 1".into(), "UPDATE 2".into()],
            executions: 1,
            rows: 3,
            suspended: false,
            error: Some(("42P01".into(), "relation \"x\" does not exist".into())),
        };
        let extended = Statement {
            protocol: Protocol::Extended,
            name: Some("s1".into()),
            params: Some(vec![Some("42".into()), None, Some("\u{0}".into())].into()),
            tags: vec![],
            executions: 201,
            suspended: true,
            error: None,
            at: Duration::ZERO,
            ..base.clone()
        };
        for s in [&base, &extended] {
            for redact in [false, true] {
                assert_eq!(
                    statement_line(s.clone(), redact),
                    legacy_statement_line(s, redact)
                );
            }
        }
        let marker = to_line(&MarkerLine {
            label: "warning: x".into(),
            refused: Some(Refusal {
                from: "client".into(),
                length: 70_000_000,
                message_type: "Q".into(),
                sqlstate: "54000".into(),
            }),
            t: 2.5,
            kind: MarkerType::Marker,
        });
        let legacy = json!({"t": 2.5, "type": "marker", "label": "warning: x",
            "refused": {"from": "client", "message_type": "Q", "length": 70_000_000i64, "sqlstate": "54000"}})
        .to_string();
        assert_eq!(marker, legacy);
    }

    #[test]
    fn statement_lines() {
        let s = Statement {
            at: Duration::from_micros(1_234_567),
            protocol: Protocol::Extended,
            name: Some("s1".into()),
            text: "select $1".into(),
            params: Some(vec![Some("42".into()), None].into()),
            duration: Duration::from_micros(420),
            tags: vec!["SELECT 1".into()],
            executions: 1,
            rows: 1,
            suspended: false,
            error: None,
        };
        let v: Value = serde_json::from_str(&statement_line(s.clone(), false)).unwrap();
        assert_eq!(v["t"], json!(1.234567));
        assert_eq!(v["params"], json!(["42", null]));
        assert_eq!(v["tag"], json!("SELECT 1"));
        assert_eq!(v["duration_ms"], json!(0.42));
        assert_eq!(v["statement"], json!("s1"));
        assert_eq!((&v["rows"], &v["executions"]), (&json!(1), &json!(1)));
        assert_eq!(v["suspended"], json!(false));
        // a portal read in pieces and left unfinished
        let piecewise = Statement {
            tags: vec![],
            executions: 201,
            rows: 20_000,
            suspended: true,
            ..s.clone()
        };
        let v: Value = serde_json::from_str(&statement_line(piecewise, false)).unwrap();
        assert_eq!(v["tag"], Value::Null);
        assert_eq!(
            (&v["rows"], &v["executions"]),
            (&json!(20_000), &json!(201))
        );
        assert_eq!(v["suspended"], json!(true));
        let r: Value = serde_json::from_str(&statement_line(s.clone(), true)).unwrap();
        assert_eq!(r["params"], Value::Null);
        assert_eq!(r["param_count"], json!(2));
        assert!(!statement_line(s, true).contains("42\""));
    }
}
