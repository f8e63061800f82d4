//! The fast writer (issue 14) writes the bytes the first one did: same text from the same
//! byte chunks, same event lines, same files and sidecars. The first writer is kept here,
//! as it was, as the reference.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gatehouse_recorder::file::{RecordingFile, chain_path};
use gatehouse_recorder::format::{Code, Utf8Assembler, event_line};

/// `Utf8Assembler::push` before issue 14.
#[derive(Default)]
struct FirstAssembler {
    pending: Vec<u8>,
}

impl FirstAssembler {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

/// `event_line` before issue 14.
fn first_event_line(at: Duration, code: Code, data: &str) -> String {
    format!(
        "[{}.{:06}, \"{}\", {}]",
        at.as_secs(),
        at.subsec_micros(),
        code.as_str(),
        serde_json::Value::String(data.to_owned())
    )
}

struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Terminal-like bytes: text, escapes, control bytes, multibyte characters (some cut short
/// or broken) and stray bytes that are not UTF-8.
fn terminal_bytes(dice: &mut Dice, len: usize) -> Vec<u8> {
    let pieces: [&[u8]; 14] = [
        b"plain text ",
        b"\r\n",
        b"\x1b[1;32m",
        b"\"quoted\" \\back\\ \t",
        "é€🚀日\u{2028}\u{2029}\u{fffd}".as_bytes(),
        &[0xe2, 0x82],
        &[0xf0, 0x9f, 0x9a],
        &[0xff],
        &[0xc0, 0xaf],
        &[0xed, 0xa0, 0x80],
        &[0x80, 0xbf],
        &[0x00, 0x01, 0x07, 0x08, 0x0b, 0x0c, 0x1f, 0x7f],
        b"x",
        b"0123456789abcdef0123456789",
    ];
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(pieces[dice.below(pieces.len())]);
    }
    out
}

#[test]
fn random_chunks_make_the_same_text_and_lines_as_the_first_writer() {
    let mut dice = Dice(0x1234_5678_9abc_def1);
    for round in 0..300 {
        let len = dice.below(5000);
        let bytes = terminal_bytes(&mut dice, len);
        let (mut first, mut fast) = (FirstAssembler::default(), Utf8Assembler::default());
        let mut borrowing = Utf8Assembler::default();
        let (mut reused, mut scratch) = (String::new(), String::new());
        let mut rest = &bytes[..];
        let mut i = 0u64;
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(dice.below(rest.len().min(300)) + 1);
            rest = after;
            let expected = first.push(chunk);
            reused.clear();
            fast.push_into(chunk, &mut reused);
            assert_eq!(reused, expected, "round {round}: {chunk:?}");
            let borrowed = borrowing.text(chunk, &mut scratch);
            assert_eq!(borrowed, expected, "round {round}: {chunk:?}");
            let at = Duration::from_micros(i * 1_234_567);
            assert_eq!(
                event_line(at, Code::Output, &expected),
                first_event_line(at, Code::Output, &expected),
                "round {round}"
            );
            i += 1;
        }
    }
}

#[test]
fn a_recording_has_the_same_bytes_and_chain_as_the_first_writer_made() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"version":2,"width":80,"height":24}"#;
    let mut by_line = RecordingFile::create_at(dir.path().join("a.cast"), header).unwrap();
    let mut in_place = RecordingFile::create_at(dir.path().join("b.cast"), header).unwrap();
    let mut dice = Dice(42);
    let mut assembler = FirstAssembler::default();
    // enough to pass the 64 KiB buffer several times, in events small and large
    for i in 0..400 {
        let len = if i % 50 == 0 { 70_000 } else { dice.below(600) };
        let text = assembler.push(&terminal_bytes(&mut dice, len));
        let at = Duration::from_millis(i);
        let code = [Code::Output, Code::Input, Code::Marker][dice.below(3)];
        by_line.append(&first_event_line(at, code, &text)).unwrap();
        in_place.append_event(at, code, &text).unwrap();
        assert_eq!(by_line.progress(), in_place.progress());
    }
    let (a, b) = (by_line.seal().unwrap(), in_place.seal().unwrap());
    assert_eq!((a.size, a.events, &a.digest), (b.size, b.events, &b.digest));
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    assert!(read(&a.path) == read(&b.path), "the cast files differ");
    assert_eq!(read(&chain_path(&a.path)), read(&chain_path(&b.path)));
    assert_eq!(a.size, read(&a.path).len() as u64);
}
