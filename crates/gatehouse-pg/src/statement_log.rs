//! The statement log of one SQL session: JSON lines under the recordings root
//! (`YYYY/MM/DD/<session>.sql.jsonl`), written by the same recorder task as terminal
//! recordings, so it has the same flushing, fail-closed and hash-chain guarantees and is
//! checked by the same `gatehouse recordings verify`.
//!
//! Line 0 is a header object (`gatehouse_sql_log: 1`, session, operator, target, …, and
//! the `startup_params` passed through to the target, such as `options` and
//! `application_name`); each further line is a `statement` or a `marker` (enforcement
//! events, and messages refused rather than relayed) with `t`, seconds since the session
//! opened. A statement line has `rows` (DataRows returned); an extended-protocol one also
//! `executions` (Executes of its portal: more than 1 when read in pieces, e.g. a JDBC fetch
//! size) and `suspended` (true when the portal was left unfinished; `tag` is then null).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gatehouse_pgproto::tracker::{Protocol, Statement};
use gatehouse_recorder::file::{RecordingFile, relative_path_with};
use gatehouse_recorder::{RecordError, RecorderHandle, Sealed, spawn_recorder};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::relay::Refused;

pub(crate) const EXTENSION: &str = "sql.jsonl";

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

fn seconds(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1e6
}

/// One statement as a log line.
pub(crate) fn statement_line(s: &Statement, redact: bool) -> String {
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
        v["statement"] = Value::from(name.as_str());
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

impl StatementLog {
    /// Creates the log and writes its header; `on_failure` runs once if a write fails later.
    pub(crate) fn create(
        root: &Path,
        started: SystemTime,
        opened: Instant,
        h: &LogHeader<'_>,
        on_failure: impl FnOnce(String) + Send + 'static,
    ) -> Result<(StatementLog, PathBuf), RecordError> {
        let path = root.join(relative_path_with(h.session, started, EXTENSION));
        let header = json!({
            "gatehouse_sql_log": 1,
            "session": h.session,
            "operator": h.operator,
            "target": h.target,
            "environment": h.environment,
            "database": h.database,
            "timestamp": started.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "redact_params": h.redact_params,
            "startup_params": params_json(h.startup_params),
        });
        let file = RecordingFile::create_at(path.clone(), &header.to_string())?;
        let handle = spawn_recorder(file, opened, on_failure);
        Ok((
            StatementLog {
                handle,
                opened,
                redact: h.redact_params,
            },
            path,
        ))
    }

    pub(crate) fn statement(&self, s: &Statement) {
        self.handle.line(statement_line(s, self.redact));
    }

    pub(crate) fn marker(&self, label: &str) {
        let t = seconds(self.opened.elapsed());
        self.handle
            .line(json!({"t": t, "type": "marker", "label": label}).to_string());
    }

    /// A message that was not relayed, as a marker naming its direction, type byte and
    /// declared length (also as fields, for tools).
    pub(crate) fn refused(&self, from: &str, r: &Refused) {
        let t = seconds(self.opened.elapsed());
        let label = format!("refused from the {from}: {r}");
        self.handle.line(
            json!({"t": t, "type": "marker", "label": label,
                "refused": {"from": from, "message_type": r.tag.to_string(), "length": r.len, "sqlstate": r.sqlstate}})
            .to_string(),
        );
    }

    /// The log's checkpoints, for the store (`gatehouse_session::store_checkpoints`).
    pub(crate) fn checkpoints(
        &self,
    ) -> tokio::sync::watch::Receiver<Option<gatehouse_recorder::Checkpoint>> {
        self.handle.checkpoints()
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

    #[test]
    fn statement_lines() {
        let s = Statement {
            at: Duration::from_micros(1_234_567),
            protocol: Protocol::Extended,
            name: Some("s1".into()),
            text: "select $1".into(),
            params: Some(vec![Some("42".into()), None]),
            duration: Duration::from_micros(420),
            tags: vec!["SELECT 1".into()],
            executions: 1,
            rows: 1,
            suspended: false,
            error: None,
        };
        let v: Value = serde_json::from_str(&statement_line(&s, false)).unwrap();
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
        let v: Value = serde_json::from_str(&statement_line(&piecewise, false)).unwrap();
        assert_eq!(v["tag"], Value::Null);
        assert_eq!(
            (&v["rows"], &v["executions"]),
            (&json!(20_000), &json!(201))
        );
        assert_eq!(v["suspended"], json!(true));
        let r: Value = serde_json::from_str(&statement_line(&s, true)).unwrap();
        assert_eq!(r["params"], Value::Null);
        assert_eq!(r["param_count"], json!(2));
        assert!(!statement_line(&s, true).contains("42\""));
    }
}
