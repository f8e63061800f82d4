//! The non-interactive companions: `gatehouse play` (replay to stdout like `asciinema
//! play`) and `gatehouse recordings export` (cast, plain text or JSON). Both only read.
//!
//! What reaches the reviewer's terminal: text the operator or the target chose and that is
//! shown *as text* (markers, typed input, SQL statements, parameters, error messages) goes
//! through [`printable`](crate::printable) in `play` and in `--format txt`, so it cannot
//! drive the terminal. The output `play` replays goes through
//! [`ReplayFilter`](crate::replay_filter): drawing reaches the terminal, sequences that act
//! beyond the screen do not. `cast` and `json` are data for programs and stay byte-exact (JSON
//! escapes control characters itself).

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::cast::{Cast, EventKind};
use crate::filter::format_position;
use crate::index::{Document, HitKind};
use crate::printable;
use crate::replay_filter::ReplayFilter;
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
                let line = printable::line(line);
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
                        let label = printable::line(label);
                        writeln!(out, "-- [{} marker] {label}", format_position(*at))?;
                    }
                    SqlEntry::Statement(s) => {
                        let mut note = vec![format_position(s.at)];
                        note.extend(s.duration_ms.map(|d| format!("{d:.2} ms")));
                        note.extend(s.tag.clone());
                        if let Some(e) = &s.error {
                            note.push(format!("error {}: {}", e.sqlstate, e.message));
                        }
                        writeln!(out, "-- [{}]", printable::line(&note.join(" · ")))?;
                        if let Some(p) = &s.params {
                            let p: Vec<&str> =
                                p.iter().map(|p| p.as_deref().unwrap_or("NULL")).collect();
                            writeln!(out, "-- params: {}", printable::line(&p.join(", ")))?;
                        }
                        writeln!(out, "{};", printable::block(s.text.trim_end_matches(';')))?;
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
                    let mut v = json!({"t": e.at.as_secs_f64(), "type": kind, "data": data});
                    if e.kind == EventKind::Output {
                        // byte-exact data; whether the reader must turn `\n` into `\r\n`
                        v["pty"] = json!(e.pty);
                    }
                    v
                })
                .collect();
            let h = &cast.header;
            let v = json!({
                "kind": "terminal",
                "width": h.width,
                "height": h.height,
                "timestamp": h.timestamp,
                "title": h.title,
                "env": h.env,
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
            let mut filter = ReplayFilter::default();
            for e in &cast.events {
                if e.kind == EventKind::Output {
                    wait(e.at);
                    out.write_all(filter.push(&cast.shown(e)).as_bytes())?;
                    out.flush()?;
                }
            }
        }
        Recording::Sql(log) => {
            for e in &log.entries {
                wait(e.at());
                match e {
                    SqlEntry::Statement(s) => {
                        writeln!(out, "{};", printable::block(s.text.trim_end_matches(';')))?;
                    }
                    SqlEntry::Marker { label, .. } => {
                        writeln!(out, "-- {}", printable::line(label))?;
                    }
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

    /// An operator-chosen OSC 52 (write the reviewer's clipboard) and a line erase.
    const OSC52: &str = "\u{1b}]52;c;cm0gLXJmIH4=\u{7}";
    const ERASE: &str = "\r\u{1b}[2K";

    fn assert_inert(out: &[u8]) {
        let text = String::from_utf8_lossy(out);
        assert!(
            !out.contains(&0x1b),
            "an ESC reached the terminal: {text:?}"
        );
        assert!(!out.contains(&b'\r'), "a CR reached the terminal: {text:?}");
        assert!(!out.contains(&0x07), "a BEL reached the terminal: {text:?}");
    }

    #[test]
    fn operator_chosen_text_never_drives_the_reviewers_terminal() {
        let cast = format!(
            "{{\"version\": 2, \"width\": 80, \"height\": 24}}\n{}\n{}\n{}\n",
            serde_json::to_string(&json!([
                0.5,
                "m",
                format!("sftp upload /tmp/{OSC52}x (3 bytes)")
            ]))
            .unwrap(),
            serde_json::to_string(&json!([1.0, "i", format!("echo hi{ERASE}\r")])).unwrap(),
            serde_json::to_string(&json!([1.1, "o", "hi\r\n"])).unwrap(),
        );
        let mut out = vec![];
        export(&rec("x.cast", &cast), Format::Txt, &mut out).unwrap();
        assert_inert(&out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("marker] sftp upload /tmp/\\x1b]52;c;cm0gLXJmIH4=\\x07x"),
            "{text}"
        );

        let header =
            r#"{"gatehouse_sql_log":1,"session":"s","operator":"o","target":"t","database":"d"}"#;
        let lines = [
            json!({"t": 0.1, "type": "marker", "label": format!("hello{OSC52}")}),
            json!({"t": 0.2, "type": "statement", "text": format!("select 1{ERASE}select 2"),
                   "params": [format!("p{OSC52}")], "tag": format!("SELECT 1{ERASE}"),
                   "error": {"sqlstate": "XX000", "message": format!("no{OSC52}")}}),
        ];
        let log = format!("{header}\n{}\n{}\n", lines[0], lines[1]);
        let r = rec("x.sql.jsonl", &log);
        let mut out = vec![];
        export(&r, Format::Txt, &mut out).unwrap();
        assert_inert(&out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("select 1\\x0d\\x1b[2Kselect 2;"), "{text}");
        let mut out = vec![];
        play(&r, 1.0, None, &mut out, |_| {}).unwrap();
        assert_inert(&out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-- hello\\x1b]52;c;cm0gLXJmIH4=\\x07\nselect 1\\x0d\\x1b[2Kselect 2;\n"
        );
        // json stays data: the text is there byte for byte, escaped by JSON itself
        let mut out = vec![];
        export(&r, Format::Json, &mut out).unwrap();
        assert!(!out.contains(&0x1b));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["entries"][0]["label"], format!("hello{OSC52}"));
    }

    #[test]
    fn play_replays_drawing_but_not_what_acts_beyond_the_screen() {
        let events = [
            json!([0.1, "o", "\u{1b}[1;31mred\u{1b}[0m "]),
            json!([
                0.2,
                "o",
                "\u{1b}]52;c;cm0gLXJmIH4=\u{7}\u{1b}[6n\u{1b}P+q544e\u{1b}\\"
            ]),
            json!([0.3, "o", "\u{1b}]0;ti"]), // a title cut across two events
            json!([0.4, "o", "tle\u{7}done\r\n"]),
        ];
        let cast = format!(
            "{{\"version\": 2, \"width\": 80, \"height\": 24}}\n{}\n",
            events.map(|e| e.to_string()).join("\n")
        );
        let mut out = vec![];
        play(&rec("x.cast", &cast), 1.0, None, &mut out, |_| {}).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\u{1b}[1;31mred\u{1b}[0m done\r\n"
        );
    }
}
