//! The recorder's writing side on arbitrary output: the chunks' text borrowed where it can
//! be (`Utf8Assembler::text`) must be what the copying `Utf8Assembler::push` makes, the
//! SIMD JSON escaper (`json::push_str`, through `push_event_line`) must write serde_json's
//! bytes exactly (the hash chain covers them), and every line must read back as its text.
//!
//! Input: the first byte picks the chunk size (1–256 bytes), the rest is the output.
#![no_main]
use std::time::Duration;

use gatehouse_recorder::format::{Code, EventLine, Utf8Assembler, push_event_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, output)) = data.split_first() else {
        return;
    };
    let (mut borrowing, mut copying) = (Utf8Assembler::default(), Utf8Assembler::default());
    let mut scratch = String::new();
    let mut line = Vec::new();
    for (i, chunk) in output.chunks(usize::from(size) + 1).enumerate() {
        let expected = copying.push(chunk);
        let text = borrowing.text(chunk, &mut scratch);
        assert_eq!(text, expected);
        line.clear();
        let at = Duration::from_micros(i as u64 * 1_000_001);
        push_event_line(&mut line, at, Code::Output, text);
        let serde = format!(
            "[{}.{:06}, \"o\", {}]",
            at.as_secs(),
            at.subsec_micros(),
            serde_json::to_string(text).unwrap_or_default()
        );
        assert_eq!(line, serde.as_bytes());
        let read = EventLine::parse(&line).map(|e| e.data().to_owned());
        assert_eq!(read.as_deref(), Some(text));
    }
});
