//! The non-interactive companions: `gatehouse play` (replay to stdout like `asciinema
//! play`) and `gatehouse recordings export` (cast, plain text or JSON). Both only read.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::cast::{Cast, EventKind};
use crate::filter::format_position;
use crate::index::{Document, HitKind};
use crate::sqllog::{SqlEntry, SqlLog};

/// A recording as read from disk.
pub enum Recording {
    Terminal { bytes: Vec<u8>, cast: Cast },
    Sql(SqlLog),
}

impl Recording {
    pub fn parse(path: &std::path::Path, bytes: Vec<u8>) -> anyhow::Result<Recording> {
        Ok(match crate::catalog::RecordingKind::of_path(path) {
            crate::catalog::RecordingKind::Terminal => {
                let cast = Cast::parse(&bytes)?;
                Recording::Terminal { bytes, cast }
            }
            crate::catalog::RecordingKind::Sql => Recording::Sql(SqlLog::parse(&bytes)?),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cast,
    Txt,
    Json,
}

/// Writes `rec` in `format`.
pub fn export(rec: &Recording, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match (rec, format) {
        (Recording::Terminal { bytes, .. }, Format::Cast) => out.write_all(bytes)?,
        (Recording::Sql(_), Format::Cast) => {
            anyhow::bail!(
                "a PostgreSQL session has a statement log, not a terminal recording: use --format txt or json"
            )
        }
        (Recording::Terminal { cast, .. }, Format::Txt) => {
            // output as plain text, with the operator's input and markers where they happened
            let doc = Document::of_cast(cast);
            for (at, kind, line) in doc.lines() {
                match kind {
                    HitKind::Output | HitKind::Sql => writeln!(out, "{line}")?,
                    HitKind::Input => writeln!(out, "[{} input] {line}", format_position(at))?,
                    HitKind::Marker => writeln!(out, "[{} marker] {line}", format_position(at))?,
                }
            }
        }
        (Recording::Sql(log), Format::Txt) => {
            for e in &log.entries {
                match e {
                    SqlEntry::Marker { at, label } => {
                        writeln!(out, "-- [{} marker] {label}", format_position(*at))?;
                    }
                    SqlEntry::Statement(s) => {
                        let mut note = vec![format_position(s.at)];
                        note.extend(s.duration_ms.map(|d| format!("{d:.2} ms")));
                        note.extend(s.tag.clone());
                        if let Some(e) = &s.error {
                            note.push(format!("error {}: {}", e.sqlstate, e.message));
                        }
                        writeln!(out, "-- [{}]", note.join(" · "))?;
                        if let Some(p) = &s.params {
                            let p: Vec<&str> =
                                p.iter().map(|p| p.as_deref().unwrap_or("NULL")).collect();
                            writeln!(out, "-- params: {}", p.join(", "))?;
                        }
                        writeln!(out, "{};", s.text.trim_end_matches(';'))?;
                    }
                }
            }
        }
        (Recording::Terminal { cast, .. }, Format::Json) => {
            let events: Vec<_> = cast
                .events
                .iter()
                .map(|e| {
                    let (kind, data) = match e.kind {
                        EventKind::Output => ("output", json!(cast.data(e))),
                        EventKind::Input => ("input", json!(cast.data(e))),
                        EventKind::Marker => ("marker", json!(cast.data(e))),
                        EventKind::Resize { cols, rows } => {
                            ("resize", json!({"cols": cols, "rows": rows}))
                        }
                    };
                    json!({"t": e.at.as_secs_f64(), "type": kind, "data": data})
                })
                .collect();
            let h = &cast.header;
            let v = json!({
                "kind": "terminal",
                "width": h.width,
                "height": h.height,
                "timestamp": h.timestamp,
                "title": h.title,
                "env": h.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "truncated": cast.truncated,
                "events": events,
            });
            serde_json::to_writer_pretty(&mut *out, &v)?;
            writeln!(out)?;
        }
        (Recording::Sql(log), Format::Json) => {
            let entries: Vec<_> = log
                .entries
                .iter()
                .map(|e| match e {
                    SqlEntry::Marker { at, label } => {
                        json!({"t": at.as_secs_f64(), "type": "marker", "label": label})
                    }
                    SqlEntry::Statement(s) => json!({
                        "t": s.at.as_secs_f64(),
                        "type": "statement",
                        "protocol": s.protocol,
                        "statement": s.name,
                        "text": s.text,
                        "params": s.params,
                        "param_count": s.param_count,
                        "redacted": s.redacted,
                        "duration_ms": s.duration_ms,
                        "tag": s.tag,
                        "error": s.error.as_ref().map(|e| json!({"sqlstate": e.sqlstate, "message": e.message})),
                    }),
                })
                .collect();
            let h = &log.header;
            let v = json!({
                "kind": "sql",
                "session": h.session,
                "operator": h.operator,
                "target": h.target,
                "environment": h.environment,
                "database": h.database,
                "timestamp": h.timestamp,
                "redact_params": h.redact_params,
                "truncated": log.truncated,
                "entries": entries,
            });
            serde_json::to_writer_pretty(&mut *out, &v)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// Replays `rec` to `out` in real time divided by `speed`, waiting with `sleep` (time is an
/// input: tests pass a sleeper that only adds up). Idle gaps longer than `idle_limit` are
/// cut to it.
pub fn play(
    rec: &Recording,
    speed: f64,
    idle_limit: Option<Duration>,
    out: &mut dyn Write,
    mut sleep: impl FnMut(Duration),
) -> anyhow::Result<()> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0,
        "--speed must be a positive number, not {speed}"
    );
    let mut last = Duration::ZERO;
    let mut wait = |at: Duration| {
        let mut gap = at.saturating_sub(last);
        if let Some(limit) = idle_limit {
            gap = gap.min(limit);
        }
        last = at;
        if !gap.is_zero() {
            sleep(gap.div_f64(speed));
        }
    };
    match rec {
        Recording::Terminal { cast, .. } => {
            for e in &cast.events {
                if e.kind == EventKind::Output {
                    wait(e.at);
                    out.write_all(cast.data(e).as_bytes())?;
                    out.flush()?;
                }
            }
        }
        Recording::Sql(log) => {
            for e in &log.entries {
                wait(e.at());
                match e {
                    SqlEntry::Statement(s) => writeln!(out, "{};", s.text.trim_end_matches(';'))?,
                    SqlEntry::Marker { label, .. } => writeln!(out, "-- {label}")?,
                }
                out.flush()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CAST: &str = "{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.5, \"o\", \"$ \"]\n[1.0, \"i\", \"ls\\r\"]\n[1.1, \"o\", \"ls\\r\\nfile\\r\\n\"]\n[31.1, \"m\", \"warning: idle\"]\n[32.0, \"o\", \"bye\\r\\n\"]\n";

    fn rec(name: &str, text: &str) -> Recording {
        Recording::parse(std::path::Path::new(name), text.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn play_waits_by_speed_and_cuts_idle_gaps() {
        let r = rec("x.cast", CAST);
        let mut out = vec![];
        let mut waited = vec![];
        play(&r, 2.0, Some(Duration::from_secs(2)), &mut out, |d| {
            waited.push(d)
        })
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "$ ls\r\nfile\r\nbye\r\n");
        let ms: Vec<u128> = waited.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![250, 300, 1000]);
        assert!(play(&r, 0.0, None, &mut vec![], |_| {}).is_err());
    }

    #[test]
    fn exports_cast_txt_and_json() {
        let r = rec("x.cast", CAST);
        let mut out = vec![];
        export(&r, Format::Cast, &mut out).unwrap();
        assert_eq!(
            out,
            CAST.as_bytes(),
            "cast export is the file, byte for byte"
        );
        let mut out = vec![];
        export(&r, Format::Txt, &mut out).unwrap();
        insta::assert_snapshot!(String::from_utf8(out).unwrap(), @r"
        [00:01.0 input] ls
        $ ls
        file
        [00:31.1 marker] warning: idle
        bye
        ");
        let mut out = vec![];
        export(&r, Format::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["events"][1]["type"], "input");
        assert_eq!(v["events"][3]["data"], "warning: idle");
    }

    #[test]
    fn sql_logs_export_as_text_and_json_but_not_cast() {
        let r = rec("x.sql.jsonl", crate::sqllog::tests::SAMPLE);
        assert!(export(&r, Format::Cast, &mut vec![]).is_err());
        let mut out = vec![];
        export(&r, Format::Txt, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "-- params: 42, NULL\nselect *\n  from orders\n where id = $1 and region = $2;\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("error 42P01: relation \"ordrs\" does not exist"),
            "{text}"
        );
        let mut out = vec![];
        export(&r, Format::Json, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["entries"][3]["error"]["sqlstate"], "42P01");
    }
}
