//! The asciicast v2 reader (`gatehouse-review`'s `cast.rs`) on arbitrary recordings, and the
//! escaping of what it hands the reviewer as text: no marker or input line may carry a
//! character that drives a terminal once escaped.
//!
//! The reader and the escaper are pure, std/serde-only modules; they are compiled here on
//! their own (`#[path]`) because the review crate also pulls in sqlx, SQLite and ratatui,
//! whose instrumented build would cost more than the fuzzing time.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/gatehouse-review/src/cast.rs"]
mod cast;
#[allow(dead_code)]
#[path = "../../crates/gatehouse-review/src/printable.rs"]
mod printable;

fuzz_target!(|data: &[u8]| {
    let Ok(rec) = cast::Cast::parse(data) else {
        return;
    };
    let mut last = std::time::Duration::ZERO;
    for e in &rec.events {
        assert!(e.at >= last, "event times never go backwards");
        last = e.at;
        let text = rec.data(e);
        assert!(!printable::line(text).chars().any(printable::is_unsafe));
        let kept = printable::block(text);
        assert!(!kept.chars().any(|c| printable::is_unsafe(c) && c != '\n' && c != '\t'));
    }
    let _ = rec.duration();
    let _ = rec.markers().count();
    let _ = rec.env("TERM");
});
