//! The PostgreSQL statement-log reader (`gatehouse-review`'s `sqllog.rs`) on arbitrary logs,
//! and the escaping of the statement text, parameters and markers shown to the reviewer.
//!
//! Compiled on its own (`#[path]`) for the same reason as `cast_reader`: the review crate's
//! other dependencies (sqlx, SQLite, ratatui) are not part of what is fuzzed here.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/gatehouse-review/src/printable.rs"]
mod printable;
#[allow(dead_code)]
#[path = "../../crates/gatehouse-review/src/sqllog.rs"]
mod sqllog;

fn shown_as_text(s: &str) {
    assert!(!printable::line(s).chars().any(printable::is_unsafe));
}

fuzz_target!(|data: &[u8]| {
    let Ok(log) = sqllog::SqlLog::parse(data) else {
        return;
    };
    for e in &log.entries {
        let _ = e.at();
        match e {
            sqllog::SqlEntry::Marker { label, .. } => shown_as_text(label),
            sqllog::SqlEntry::Statement(s) => {
                let kept = printable::block(&s.text);
                assert!(!kept.chars().any(|c| printable::is_unsafe(c) && c != '\n' && c != '\t'));
                for p in s.params.iter().flatten().flatten() {
                    shown_as_text(p);
                }
                if let Some(err) = &s.error {
                    shown_as_text(&err.message);
                }
            }
        }
    }
    let _ = log.statements().count();
});
